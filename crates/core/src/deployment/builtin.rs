//! Public Greengrass components that the core itself provides. A recipe may depend on them
//! (or a deployment may name them) and the dependency is satisfied without running anything.

/// Names served by lichen itself. The client-device names are provided by the embedded
/// broker and bridge, which read those components' configuration.
pub const BUILTIN_COMPONENTS: &[&str] = &[
    "aws.greengrass.Nucleus",
    "aws.greengrass.NucleusLite",
    "aws.greengrass.Cli",
    "aws.greengrass.ShadowManager",
    "aws.greengrass.TokenExchangeService",
    "aws.greengrass.SecretManager",
    "aws.greengrass.StreamManager",
    "aws.greengrass.LogManager",
    "aws.greengrass.LambdaLauncher",
    "aws.greengrass.LambdaManager",
    "aws.greengrass.LambdaRuntimes",
    "aws.greengrass.clientdevices.Auth",
    "aws.greengrass.clientdevices.mqtt.Bridge",
    "aws.greengrass.clientdevices.mqtt.Moquette",
    "aws.greengrass.clientdevices.mqtt.EMQX",
    "aws.greengrass.clientdevices.IPDetector",
];

pub fn is_builtin(name: &str) -> bool {
    BUILTIN_COMPONENTS.contains(&name)
}
