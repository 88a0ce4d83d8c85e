//! The operations the core itself serves: one descriptor each (see [`super::operation`]).
//!
//! | operations | authorization (service id → resource) |
//! |---|---|
//! | PublishToTopic, SubscribeToTopic (streams `SubscriptionResponseMessage`) | `aws.greengrass.ipc.pubsub` → the topic or filter, MQTT wildcards literal |
//! | GetConfiguration (any component), UpdateConfiguration (own, not `accessControl`), SubscribeToConfigurationUpdate, SubscribeToValidateConfigurationUpdates, SendConfigurationValidityReport | none |
//! | UpdateState, SubscribeToComponentUpdates, DeferComponentUpdate | none |
//! | PauseComponent, ResumeComponent | `aws.greengrass.ipc.lifecycle` → component name |
//! | ListComponents, GetComponentDetails, RestartComponent, StopComponent, CreateLocalDeployment, CancelLocalDeployment, GetLocalDeploymentStatus, ListLocalDeployments | `aws.greengrass.Cli` → component name, deployment id, or `*` |
//! | PutComponentMetric | `aws.greengrass.ipc.componentmetric` → each metric name (unlike Greengrass, components need not be named `aws.*`) |
//! | ValidateAuthorizationToken | `aws.greengrass.StreamManager` always; others need lichen's `lichen.ipc.auth` → `*` |

use super::operation::{Handler, Operation, Resource};
use super::{cli, config, lifecycle, misc, pubsub};
use crate::authz::{
    SERVICE_AUTH, SERVICE_CLI, SERVICE_COMPONENT_METRIC, SERVICE_LIFECYCLE, SERVICE_PUBSUB,
};
use crate::error::ErrorShape::*;

pub(super) fn operations() -> Vec<Operation> {
    vec![
        // Pub/sub over the local bus.
        Operation::new(
            "PublishToTopic",
            Handler::sync(|c| pubsub::publish(c.shared, c.caller, c.payload)),
        )
        .authorize(SERVICE_PUBSUB, Resource::Field("topic"))
        .errors(&[UnauthorizedError]),
        Operation::new(
            "SubscribeToTopic",
            Handler::sync(|c| pubsub::subscribe(c.shared, c.caller, c.payload)),
        )
        .authorize(SERVICE_PUBSUB, Resource::Field("topic"))
        .errors(&[UnauthorizedError, InvalidArgumentsError])
        .streaming("aws.greengrass#SubscriptionResponseMessage"),
        // Configuration.
        Operation::new(
            "GetConfiguration",
            Handler::sync(|c| config::get(c.shared, c.caller, c.payload)),
        )
        .errors(&[ResourceNotFoundError]),
        Operation::new(
            "UpdateConfiguration",
            Handler::sync(|c| config::update(c.shared, c.caller, c.payload)),
        )
        .errors(&[
            UnauthorizedError,
            ConflictError,
            FailedUpdateConditionCheckError,
            InvalidArgumentsError,
        ]),
        Operation::new(
            "SubscribeToConfigurationUpdate",
            Handler::sync(|c| config::subscribe(c.shared, c.caller, c.payload)),
        )
        .errors(&[ResourceNotFoundError])
        .streaming("aws.greengrass#ConfigurationUpdateEvents"),
        Operation::new(
            "SubscribeToValidateConfigurationUpdates",
            Handler::sync(|c| config::subscribe_validate(c.shared, c.caller)),
        )
        .streaming("aws.greengrass#ValidateConfigurationUpdateEvents"),
        Operation::new(
            "SendConfigurationValidityReport",
            Handler::sync(|c| config::validity_report(c.shared, c.caller, c.payload)),
        )
        .errors(&[InvalidArgumentsError]),
        // Lifecycle.
        Operation::new(
            "UpdateState",
            Handler::sync(|c| lifecycle::update_state(c.shared, c.caller, c.payload)),
        )
        .errors(&[ResourceNotFoundError]),
        Operation::new(
            "SubscribeToComponentUpdates",
            Handler::sync(|c| lifecycle::subscribe_updates(c.shared, c.caller)),
        )
        .errors(&[ResourceNotFoundError])
        .streaming("aws.greengrass#ComponentUpdatePolicyEvents"),
        Operation::new(
            "DeferComponentUpdate",
            Handler::sync(|c| lifecycle::defer(c.shared, c.caller, c.payload)),
        )
        .errors(&[ResourceNotFoundError, InvalidArgumentsError]),
        Operation::new(
            "PauseComponent",
            Handler::asynchronous(|c| Box::pin(lifecycle::pause(c.shared, c.payload, true))),
        )
        .authorize(SERVICE_LIFECYCLE, Resource::Field("componentName"))
        .errors(&[UnauthorizedError, ResourceNotFoundError])
        .slow(),
        Operation::new(
            "ResumeComponent",
            Handler::asynchronous(|c| Box::pin(lifecycle::pause(c.shared, c.payload, false))),
        )
        .authorize(SERVICE_LIFECYCLE, Resource::Field("componentName"))
        .errors(&[UnauthorizedError, ResourceNotFoundError])
        .slow(),
        // The Greengrass CLI service.
        Operation::new(
            "ListComponents",
            Handler::sync(|c| cli::list_components(c.shared)),
        )
        .authorize(SERVICE_CLI, Resource::Fixed("*")),
        Operation::new(
            "GetComponentDetails",
            Handler::sync(|c| cli::component_details(c.shared, c.payload)),
        )
        .authorize(SERVICE_CLI, Resource::Field("componentName"))
        .errors(&[ResourceNotFoundError, InvalidArgumentsError]),
        Operation::new(
            "RestartComponent",
            Handler::asynchronous(|c| Box::pin(cli::restart(c.shared, c.payload))),
        )
        .authorize(SERVICE_CLI, Resource::Field("componentName"))
        .errors(&[ComponentNotFoundError, InvalidArgumentsError])
        .slow(),
        Operation::new(
            "StopComponent",
            Handler::asynchronous(|c| Box::pin(cli::stop(c.shared, c.payload))),
        )
        .authorize(SERVICE_CLI, Resource::Field("componentName"))
        .errors(&[ComponentNotFoundError, InvalidArgumentsError])
        .slow(),
        Operation::new(
            "CreateLocalDeployment",
            Handler::asynchronous(|c| Box::pin(cli::create_deployment(c.shared, c.payload))),
        )
        .authorize(SERVICE_CLI, Resource::Fixed("*"))
        .errors(&[
            InvalidRecipeDirectoryPathError,
            InvalidArtifactsDirectoryPathError,
            InvalidArgumentsError,
        ])
        .slow(),
        Operation::new(
            "CancelLocalDeployment",
            Handler::asynchronous(|c| {
                // Authorization chose the deployment (the request's, or the newest
                // unfinished one) and allowed it: act on that one.
                let id = c.resources.first().map(String::as_str).unwrap_or_default();
                Box::pin(cli::cancel_deployment(c.shared, id))
            }),
        )
        .authorize(SERVICE_CLI, Resource::Computed(cli::cancel_target))
        .errors(&[ResourceNotFoundError, InvalidArgumentsError])
        .slow(),
        Operation::new(
            "GetLocalDeploymentStatus",
            Handler::sync(|c| cli::deployment_status(c.shared, c.payload)),
        )
        .authorize(SERVICE_CLI, Resource::Field("deploymentId"))
        .errors(&[ResourceNotFoundError]),
        Operation::new(
            "ListLocalDeployments",
            Handler::sync(|c| cli::list_deployments(c.shared)),
        )
        .authorize(SERVICE_CLI, Resource::Fixed("*")),
        // Metrics and tokens.
        Operation::new(
            "PutComponentMetric",
            Handler::sync(|c| misc::put_metric(c.shared, c.caller, c.payload)),
        )
        .authorize(
            SERVICE_COMPONENT_METRIC,
            Resource::Computed(misc::metric_names),
        )
        .errors(&[UnauthorizedError, InvalidArgumentsError]),
        Operation::new(
            "ValidateAuthorizationToken",
            Handler::sync(|c| misc::validate_token(c.shared, c.payload)),
        )
        .authorize(
            SERVICE_AUTH,
            Resource::Computed(misc::validate_token_resources),
        )
        .errors(&[InvalidTokenError, UnauthorizedError]),
    ]
}
