//! [`crate::Backend`] for every type with a `run` that executes one [`Op`] in one
//! transaction: the SQLite and PostgreSQL backends, and [`crate::Store`], which delegates
//! `run` to the backend it holds. Each method copies its arguments (the SQLite worker runs on
//! its own thread) and calls the backend-neutral operation in `ops`.

use crate::Result;
use crate::db::{BoxFut, Op, Tx};

/// Boxes an operation; the closure's higher-ranked signature is inferred from the bound.
pub(crate) fn op<R, F>(f: F) -> Op<R>
where
    F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFut<'t, Result<R>> + Send + 'static,
{
    Box::new(f)
}

macro_rules! impl_backend {
    ($ty:ty) => {
        impl $crate::Backend for $ty {
            fn create_thing(&self, thing: &NewThing) -> impl Future<Output = Result<Thing>> + Send {
                let thing = thing.clone();
                self.run(op(move |tx| Box::pin(registry::create_thing(tx, thing))))
            }
            fn create_thing_in_groups(
                &self,
                thing: &NewThing,
                groups: &[String],
            ) -> impl Future<Output = Result<Thing>> + Send {
                let (thing, groups) = (thing.clone(), groups.to_vec());
                self.run(op(move |tx| {
                    Box::pin(atomic::create_thing_in_groups(tx, thing, groups))
                }))
            }
            fn get_thing(&self, name: &str) -> impl Future<Output = Result<Thing>> + Send {
                let name = name.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { registry::get_thing(tx, &name).await })
                }))
            }
            fn list_things(&self, page: &Page) -> impl Future<Output = Result<Vec<Thing>>> + Send {
                let page = page.clone();
                self.run(op(move |tx| Box::pin(registry::list_things(tx, page))))
            }
            fn set_thing_attributes(
                &self,
                name: &str,
                attributes: &Attributes,
                expected_version: Option<i64>,
            ) -> impl Future<Output = Result<Thing>> + Send {
                let (name, attributes) = (name.to_owned(), attributes.clone());
                self.run(op(move |tx| {
                    Box::pin(async move {
                        registry::set_thing_attributes(tx, &name, attributes, expected_version)
                            .await
                    })
                }))
            }
            fn delete_thing(&self, name: &str) -> impl Future<Output = Result<()>> + Send {
                let name = name.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { registry::delete_thing(tx, &name).await })
                }))
            }
            fn create_group(
                &self,
                group: &NewThingGroup,
            ) -> impl Future<Output = Result<ThingGroup>> + Send {
                let group = group.clone();
                self.run(op(move |tx| Box::pin(registry::create_group(tx, group))))
            }
            fn get_group(&self, name: &str) -> impl Future<Output = Result<ThingGroup>> + Send {
                let name = name.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { registry::get_group(tx, &name).await })
                }))
            }
            fn list_groups(
                &self,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<ThingGroup>>> + Send {
                let page = page.clone();
                self.run(op(move |tx| Box::pin(registry::list_groups(tx, page))))
            }
            fn delete_group(&self, name: &str) -> impl Future<Output = Result<()>> + Send {
                let name = name.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { registry::delete_group(tx, &name).await })
                }))
            }
            fn add_to_group(
                &self,
                group: &str,
                thing: &str,
            ) -> impl Future<Output = Result<()>> + Send {
                let (group, thing) = (group.to_owned(), thing.to_owned());
                self.run(op(move |tx| {
                    Box::pin(async move { registry::add_to_group(tx, &group, &thing).await })
                }))
            }
            fn remove_from_group(
                &self,
                group: &str,
                thing: &str,
            ) -> impl Future<Output = Result<()>> + Send {
                let (group, thing) = (group.to_owned(), thing.to_owned());
                self.run(op(move |tx| {
                    Box::pin(async move { registry::remove_from_group(tx, &group, &thing).await })
                }))
            }
            fn group_members(
                &self,
                group: &str,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<String>>> + Send {
                let (group, page) = (group.to_owned(), page.clone());
                self.run(op(move |tx| {
                    Box::pin(async move { registry::group_members(tx, &group, page).await })
                }))
            }
            fn groups_of(&self, thing: &str) -> impl Future<Output = Result<Vec<String>>> + Send {
                let thing = thing.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { registry::groups_of(tx, &thing).await })
                }))
            }
            fn put_connectivity(
                &self,
                info: &Connectivity,
            ) -> impl Future<Output = Result<()>> + Send {
                let info = info.clone();
                self.run(op(move |tx| Box::pin(registry::put_connectivity(tx, info))))
            }
            fn get_connectivity(
                &self,
                thing: &str,
            ) -> impl Future<Output = Result<Option<Connectivity>>> + Send {
                let thing = thing.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { registry::get_connectivity(tx, &thing).await })
                }))
            }
            fn set_presence(&self, presence: &Presence) -> impl Future<Output = Result<()>> + Send {
                let presence = presence.clone();
                self.run(op(move |tx| Box::pin(registry::set_presence(tx, presence))))
            }
            fn get_presence(
                &self,
                thing: &str,
            ) -> impl Future<Output = Result<Option<Presence>>> + Send {
                let thing = thing.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { registry::get_presence(tx, &thing).await })
                }))
            }
            fn presence_changed(
                &self,
                change: &PresenceChange,
            ) -> impl Future<Output = Result<()>> + Send {
                let change = change.clone();
                self.run(op(move |tx| {
                    Box::pin(registry::presence_changed(tx, change))
                }))
            }
            fn reset_presence(
                &self,
                node: &str,
                at: &str,
            ) -> impl Future<Output = Result<u64>> + Send {
                let (node, at) = (node.to_owned(), at.to_owned());
                self.run(op(move |tx| {
                    Box::pin(registry::reset_presence(tx, node, at))
                }))
            }
            fn record_fleet_status(
                &self,
                thing: &str,
                message: &serde_json::Value,
                at: &str,
            ) -> impl Future<Output = Result<DeviceStatus>> + Send {
                let (thing, message, at) = (thing.to_owned(), message.clone(), at.to_owned());
                self.run(op(move |tx| {
                    Box::pin(status::record_fleet_status(tx, thing, message, at))
                }))
            }
            fn record_fleet_statuses(
                &self,
                batch: Vec<(String, serde_json::Value)>,
                at: &str,
            ) -> impl Future<Output = Result<u64>> + Send {
                let at = at.to_owned();
                self.run(op(move |tx| {
                    Box::pin(status::record_fleet_statuses(tx, batch, at))
                }))
            }
            fn touch_device(
                &self,
                thing: &str,
                at: &str,
            ) -> impl Future<Output = Result<()>> + Send {
                let (thing, at) = (thing.to_owned(), at.to_owned());
                self.run(op(move |tx| Box::pin(status::touch_device(tx, thing, at))))
            }
            fn get_device_status(
                &self,
                thing: &str,
            ) -> impl Future<Output = Result<Option<DeviceStatus>>> + Send {
                let thing = thing.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { status::get_device_status(tx, &thing).await })
                }))
            }
            fn list_device_statuses(
                &self,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<DeviceStatus>>> + Send {
                let page = page.clone();
                self.run(op(move |tx| {
                    Box::pin(status::list_device_statuses(tx, page))
                }))
            }
            fn append_stream_records(
                &self,
                thing: &str,
                stream: &str,
                records: Vec<StreamRecord>,
                at: &str,
            ) -> impl Future<Output = Result<StreamAppend>> + Send {
                let (thing, stream, at) = (thing.to_owned(), stream.to_owned(), at.to_owned());
                self.run(op(move |tx| {
                    Box::pin(streams::append_stream_records(
                        tx, thing, stream, records, at,
                    ))
                }))
            }
            fn read_stream_records(
                &self,
                query: &StreamQuery,
            ) -> impl Future<Output = Result<Vec<StreamRecord>>> + Send {
                let query = query.clone();
                self.run(op(move |tx| {
                    Box::pin(streams::read_stream_records(tx, query))
                }))
            }
            fn associate_client_devices(
                &self,
                core: &str,
                devices: &[String],
                at: &str,
            ) -> impl Future<Output = Result<Vec<AssociationError>>> + Send {
                let (core, devices, at) = (core.to_owned(), devices.to_vec(), at.to_owned());
                self.run(op(move |tx| {
                    Box::pin(associations::associate_client_devices(
                        tx, core, devices, at,
                    ))
                }))
            }
            fn disassociate_client_devices(
                &self,
                core: &str,
                devices: &[String],
            ) -> impl Future<Output = Result<Vec<AssociationError>>> + Send {
                let (core, devices) = (core.to_owned(), devices.to_vec());
                self.run(op(move |tx| {
                    Box::pin(associations::disassociate_client_devices(tx, core, devices))
                }))
            }
            fn list_client_devices(
                &self,
                core: &str,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<ClientDeviceAssociation>>> + Send {
                let (core, page) = (core.to_owned(), page.clone());
                self.run(op(move |tx| {
                    Box::pin(associations::list_client_devices(tx, core, page))
                }))
            }
            fn put_certificate(
                &self,
                cert: &CertificateRecord,
            ) -> impl Future<Output = Result<()>> + Send {
                let cert = cert.clone();
                self.run(op(move |tx| Box::pin(certs::put_certificate(tx, cert))))
            }
            fn get_certificate(
                &self,
                fingerprint: &str,
            ) -> impl Future<Output = Result<CertificateRecord>> + Send {
                let fingerprint = fingerprint.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { certs::get_certificate(tx, &fingerprint).await })
                }))
            }
            fn list_certificates(
                &self,
                filter: &CertificateFilter,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<CertificateRecord>>> + Send {
                let (filter, page) = (filter.clone(), page.clone());
                self.run(op(move |tx| {
                    Box::pin(certs::list_certificates(tx, filter, page))
                }))
            }
            fn attach_certificate(
                &self,
                fingerprint: &str,
                thing: &str,
            ) -> impl Future<Output = Result<()>> + Send {
                let (fingerprint, thing) = (fingerprint.to_owned(), thing.to_owned());
                self.run(op(move |tx| {
                    Box::pin(
                        async move { certs::attach_certificate(tx, &fingerprint, &thing).await },
                    )
                }))
            }
            fn revoke_certificate(
                &self,
                fingerprint: &str,
                at: &str,
            ) -> impl Future<Output = Result<CertificateRecord>> + Send {
                let (fingerprint, at) = (fingerprint.to_owned(), at.to_owned());
                self.run(op(move |tx| {
                    Box::pin(async move { certs::revoke_certificate(tx, &fingerprint, &at).await })
                }))
            }
            fn put_template(
                &self,
                template: &ProvisioningTemplate,
            ) -> impl Future<Output = Result<()>> + Send {
                let template = template.clone();
                self.run(op(move |tx| Box::pin(certs::put_template(tx, template))))
            }
            fn add_claim_certificate(
                &self,
                template: &str,
                cert: &CertificateRecord,
                max: usize,
            ) -> impl Future<Output = Result<ProvisioningTemplate>> + Send {
                let (template, cert) = (template.to_owned(), cert.clone());
                self.run(op(move |tx| {
                    Box::pin(atomic::add_claim_certificate(tx, template, cert, max))
                }))
            }
            fn get_template(
                &self,
                name: &str,
            ) -> impl Future<Output = Result<ProvisioningTemplate>> + Send {
                let name = name.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { certs::get_template(tx, &name).await })
                }))
            }
            fn list_templates(
                &self,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<ProvisioningTemplate>>> + Send {
                let page = page.clone();
                self.run(op(move |tx| Box::pin(certs::list_templates(tx, page))))
            }
            fn delete_template(&self, name: &str) -> impl Future<Output = Result<()>> + Send {
                let name = name.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { certs::delete_template(tx, &name).await })
                }))
            }
            fn put_ownership_token(
                &self,
                token: &OwnershipToken,
            ) -> impl Future<Output = Result<()>> + Send {
                let token = token.clone();
                self.run(op(move |tx| {
                    Box::pin(certs::put_ownership_token(tx, token))
                }))
            }
            fn take_ownership_token(
                &self,
                token_hash: &str,
            ) -> impl Future<Output = Result<OwnershipToken>> + Send {
                let token_hash = token_hash.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { certs::take_ownership_token(tx, &token_hash).await })
                }))
            }
            fn create_component_version(
                &self,
                component: &ComponentVersion,
            ) -> impl Future<Output = Result<()>> + Send {
                let component = component.clone();
                self.run(op(move |tx| {
                    Box::pin(components::create_component_version(tx, component))
                }))
            }
            fn get_component_version(
                &self,
                name: &str,
                version: &str,
            ) -> impl Future<Output = Result<ComponentVersion>> + Send {
                let (name, version) = (name.to_owned(), version.to_owned());
                self.run(op(move |tx| {
                    Box::pin(
                        async move { components::get_component_version(tx, &name, &version).await },
                    )
                }))
            }
            fn list_component_versions(
                &self,
                name: Option<&str>,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<ComponentVersion>>> + Send {
                let (name, page) = (name.map(str::to_owned), page.clone());
                self.run(op(move |tx| {
                    Box::pin(components::list_component_versions(tx, name, page))
                }))
            }
            fn delete_component_version(
                &self,
                name: &str,
                version: &str,
            ) -> impl Future<Output = Result<()>> + Send {
                let (name, version) = (name.to_owned(), version.to_owned());
                self.run(op(move |tx| {
                    Box::pin(async move {
                        components::delete_component_version(tx, &name, &version).await
                    })
                }))
            }
            fn artifact_referenced(
                &self,
                sha256: &str,
            ) -> impl Future<Output = Result<bool>> + Send {
                let sha256 = sha256.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { components::artifact_referenced(tx, &sha256).await })
                }))
            }
            fn put_deployment(
                &self,
                deployment: &FleetDeployment,
            ) -> impl Future<Output = Result<()>> + Send {
                let deployment = deployment.clone();
                self.run(op(move |tx| {
                    Box::pin(components::put_deployment(tx, deployment))
                }))
            }
            fn get_deployment(
                &self,
                id: &str,
            ) -> impl Future<Output = Result<FleetDeployment>> + Send {
                let id = id.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { components::get_deployment(tx, &id).await })
                }))
            }
            fn list_deployments(
                &self,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<FleetDeployment>>> + Send {
                let page = page.clone();
                self.run(op(move |tx| {
                    Box::pin(components::list_deployments(tx, page))
                }))
            }
            fn list_deployments_with_history(
                &self,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<FleetDeployment>>> + Send {
                let page = page.clone();
                self.run(op(move |tx| {
                    Box::pin(components::list_deployments_with_history(tx, page))
                }))
            }
            fn deployments_using(
                &self,
                name: &str,
                version: &str,
            ) -> impl Future<Output = Result<Vec<String>>> + Send {
                let (name, version) = (name.to_owned(), version.to_owned());
                self.run(op(move |tx| {
                    Box::pin(
                        async move { components::deployments_using(tx, &name, &version).await },
                    )
                }))
            }
            fn current_deployment(
                &self,
                target: &DeploymentTarget,
            ) -> impl Future<Output = Result<Option<FleetDeployment>>> + Send {
                let target = target.clone();
                self.run(op(move |tx| {
                    Box::pin(async move { fleet::current_deployment(tx, &target).await })
                }))
            }
            fn deployments_for_thing(
                &self,
                thing: &str,
            ) -> impl Future<Output = Result<Vec<FleetDeployment>>> + Send {
                let thing = thing.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { fleet::deployments_for_thing(tx, &thing).await })
                }))
            }
            fn create_fleet_deployment(
                &self,
                write: &FleetDeploymentWrite,
            ) -> impl Future<Output = Result<Vec<String>>> + Send {
                let write = write.clone();
                self.run(op(move |tx| {
                    Box::pin(fleet::create_fleet_deployment(tx, write))
                }))
            }
            fn cancel_fleet_deployment(
                &self,
                cancel: &FleetCancel,
            ) -> impl Future<Output = Result<(FleetDeployment, Vec<String>)>> + Send {
                let cancel = cancel.clone();
                self.run(op(move |tx| {
                    Box::pin(fleet::cancel_fleet_deployment(tx, cancel))
                }))
            }
            fn cancel_job_and_executions(
                &self,
                job_id: &str,
                now_secs: i64,
            ) -> impl Future<Output = Result<Vec<String>>> + Send {
                let job_id = job_id.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { fleet::cancel_job(tx, &job_id, now_secs).await })
                }))
            }
            fn cancel_job_execution(
                &self,
                job_id: &str,
                thing: &str,
                now_secs: i64,
            ) -> impl Future<Output = Result<bool>> + Send {
                let (job_id, thing) = (job_id.to_owned(), thing.to_owned());
                self.run(op(move |tx| {
                    Box::pin(
                        async move { fleet::cancel_execution(tx, &job_id, &thing, now_secs).await },
                    )
                }))
            }
            fn get_shadow(
                &self,
                thing: &str,
                name: &str,
            ) -> impl Future<Output = Result<Option<ShadowRecord>>> + Send {
                let (thing, name) = (thing.to_owned(), name.to_owned());
                self.run(op(move |tx| {
                    Box::pin(async move { shadows::get_shadow(tx, &thing, &name).await })
                }))
            }
            fn put_shadow(
                &self,
                shadow: &ShadowRecord,
                expected_version: Option<i64>,
            ) -> impl Future<Output = Result<()>> + Send {
                let shadow = shadow.clone();
                self.run(op(move |tx| {
                    Box::pin(shadows::put_shadow(tx, shadow, expected_version))
                }))
            }
            fn delete_shadow(
                &self,
                thing: &str,
                name: &str,
                expected_version: Option<i64>,
            ) -> impl Future<Output = Result<()>> + Send {
                let (thing, name) = (thing.to_owned(), name.to_owned());
                self.run(op(move |tx| {
                    Box::pin(async move {
                        shadows::delete_shadow(tx, &thing, &name, expected_version).await
                    })
                }))
            }
            fn list_named_shadows(
                &self,
                thing: &str,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<String>>> + Send {
                let (thing, page) = (thing.to_owned(), page.clone());
                self.run(op(move |tx| {
                    Box::pin(async move { shadows::list_named_shadows(tx, &thing, page).await })
                }))
            }
            fn create_job(&self, job: &Job) -> impl Future<Output = Result<()>> + Send {
                let job = job.clone();
                self.run(op(move |tx| Box::pin(jobs::create_job(tx, job))))
            }
            fn get_job(&self, id: &str) -> impl Future<Output = Result<Job>> + Send {
                let id = id.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { jobs::get_job(tx, &id).await })
                }))
            }
            fn list_jobs(&self, page: &Page) -> impl Future<Output = Result<Vec<Job>>> + Send {
                let page = page.clone();
                self.run(op(move |tx| Box::pin(jobs::list_jobs(tx, page))))
            }
            fn update_job(&self, job: &Job) -> impl Future<Output = Result<()>> + Send {
                let job = job.clone();
                self.run(op(move |tx| Box::pin(jobs::update_job(tx, job))))
            }
            fn put_job_execution(
                &self,
                execution: &JobExecution,
                expected_version: Option<i64>,
            ) -> impl Future<Output = Result<()>> + Send {
                let execution = execution.clone();
                self.run(op(move |tx| {
                    Box::pin(jobs::put_job_execution(tx, execution, expected_version))
                }))
            }
            fn put_job_executions(
                &self,
                batch: &[(JobExecution, Option<i64>)],
            ) -> impl Future<Output = Result<Vec<Result<()>>>> + Send {
                let batch = batch.to_vec();
                let too_many = batch.len() > crate::MAX_EXECUTION_BATCH;
                let len = batch.len();
                self.run(op(move |tx| {
                    Box::pin(async move {
                        if too_many {
                            return Err(crate::StoreError::Invalid {
                                field: "batch",
                                message: format!(
                                    "{len} executions; at most {} per transaction",
                                    crate::MAX_EXECUTION_BATCH
                                ),
                            });
                        }
                        jobs::put_job_executions(tx, batch).await
                    })
                }))
            }
            fn get_job_execution(
                &self,
                job_id: &str,
                thing: &str,
            ) -> impl Future<Output = Result<Option<JobExecution>>> + Send {
                let (job_id, thing) = (job_id.to_owned(), thing.to_owned());
                self.run(op(move |tx| {
                    Box::pin(async move { jobs::get_job_execution(tx, &job_id, &thing).await })
                }))
            }
            fn list_job_executions_for_thing(
                &self,
                thing: &str,
                statuses: &[JobExecutionStatus],
                page: &Page,
            ) -> impl Future<Output = Result<Vec<JobExecution>>> + Send {
                let (thing, statuses, page) = (thing.to_owned(), statuses.to_vec(), page.clone());
                self.run(op(move |tx| {
                    Box::pin(async move {
                        jobs::list_job_executions_for_thing(tx, &thing, statuses, page).await
                    })
                }))
            }
            fn list_job_executions_for_job(
                &self,
                job_id: &str,
                page: &Page,
            ) -> impl Future<Output = Result<Vec<JobExecution>>> + Send {
                let (job_id, page) = (job_id.to_owned(), page.clone());
                self.run(op(move |tx| {
                    Box::pin(
                        async move { jobs::list_job_executions_for_job(tx, &job_id, page).await },
                    )
                }))
            }
            fn put_admin_token(
                &self,
                token: &AdminToken,
            ) -> impl Future<Output = Result<()>> + Send {
                let token = token.clone();
                self.run(op(move |tx| Box::pin(jobs::put_admin_token(tx, token))))
            }
            fn create_first_admin_token(
                &self,
                token: &AdminToken,
            ) -> impl Future<Output = Result<bool>> + Send {
                let token = token.clone();
                self.run(op(move |tx| {
                    Box::pin(atomic::create_first_admin_token(tx, token))
                }))
            }
            fn find_admin_token(
                &self,
                token_hash: &str,
            ) -> impl Future<Output = Result<Option<AdminToken>>> + Send {
                let token_hash = token_hash.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { jobs::find_admin_token(tx, &token_hash).await })
                }))
            }
            fn list_admin_tokens(&self) -> impl Future<Output = Result<Vec<AdminToken>>> + Send {
                self.run(op(move |tx| Box::pin(jobs::list_admin_tokens(tx))))
            }
            fn delete_admin_token(&self, id: &str) -> impl Future<Output = Result<()>> + Send {
                let id = id.to_owned();
                self.run(op(move |tx| {
                    Box::pin(async move { jobs::delete_admin_token(tx, &id).await })
                }))
            }
        }
    };
}

pub(crate) use impl_backend;
