//! Public Greengrass components that lichen itself stands in for. A recipe may depend on
//! them (or a deployment may name them) and the dependency is satisfied without running
//! anything — but only some are really *provided*. A deployment that needs one that is not
//! succeeds, and its record (`statusDetails`) and the log name the missing service.
//!
//! This table is the one place that says which built-ins lichen provides. A service that
//! comes to provide one (say a shadow service for `aws.greengrass.ShadowManager`) either
//! flips its `provided` flag here, when it is always compiled in, or calls
//! [`crate::CoreHandle::provide_builtin`] when it starts.

use std::collections::BTreeSet;
use std::sync::RwLock;

/// A built-in component and whether lichen serves it today.
pub struct Builtin {
    pub name: &'static str,
    /// Who serves it, or why nothing does yet.
    pub note: &'static str,
    pub provided: bool,
}

const fn provided(name: &'static str, note: &'static str) -> Builtin {
    Builtin {
        name,
        note,
        provided: true,
    }
}

const fn missing(name: &'static str, note: &'static str) -> Builtin {
    Builtin {
        name,
        note,
        provided: false,
    }
}

pub const BUILTINS: &[Builtin] = &[
    provided("aws.greengrass.Nucleus", "the lichen core"),
    provided("aws.greengrass.NucleusLite", "the lichen core"),
    provided("aws.greengrass.Cli", "the lichen CLI"),
    missing(
        "aws.greengrass.ShadowManager",
        "no local shadow service yet",
    ),
    missing(
        "aws.greengrass.TokenExchangeService",
        "no AWS credentials provider yet",
    ),
    missing("aws.greengrass.SecretManager", "no secret manager yet"),
    missing("aws.greengrass.StreamManager", "no stream manager yet"),
    missing("aws.greengrass.LogManager", "no log upload yet"),
    missing("aws.greengrass.LambdaLauncher", "no Lambda runner yet"),
    missing("aws.greengrass.LambdaManager", "no Lambda runner yet"),
    missing("aws.greengrass.LambdaRuntimes", "no Lambda runner yet"),
    missing(
        "aws.greengrass.LegacySubscriptionRouter",
        "no Lambda runner yet",
    ),
    provided("aws.greengrass.clientdevices.Auth", "the embedded broker"),
    provided(
        "aws.greengrass.clientdevices.mqtt.Bridge",
        "the embedded broker",
    ),
    provided(
        "aws.greengrass.clientdevices.mqtt.Moquette",
        "the embedded broker",
    ),
    provided(
        "aws.greengrass.clientdevices.mqtt.EMQX",
        "the embedded broker",
    ),
    missing(
        "aws.greengrass.clientdevices.IPDetector",
        "no connectivity reporting without a cloud",
    ),
];

/// Names lichen stands in for (provided or not).
pub const BUILTIN_COMPONENTS: &[&str] = &{
    let mut names = [""; BUILTINS.len()];
    let mut i = 0;
    while i < BUILTINS.len() {
        names[i] = BUILTINS[i].name;
        i += 1;
    }
    names
};

pub fn is_builtin(name: &str) -> bool {
    BUILTINS.iter().any(|b| b.name == name)
}

fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// Which built-ins this core provides: the table's, plus those services registered.
pub struct ProvidedBuiltins {
    registered: RwLock<BTreeSet<String>>,
}

impl Default for ProvidedBuiltins {
    fn default() -> Self {
        ProvidedBuiltins {
            registered: RwLock::new(BTreeSet::new()),
        }
    }
}

impl ProvidedBuiltins {
    /// Marks `name` provided by a service that started. Returns false for a name that is
    /// not a built-in.
    pub fn provide(&self, name: &str) -> bool {
        if !is_builtin(name) {
            return false;
        }
        self.registered
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        true
    }

    pub fn is_provided(&self, name: &str) -> bool {
        builtin(name).is_some_and(|b| b.provided)
            || self
                .registered
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(name)
    }

    /// One line per built-in in `names` that nothing provides, naming it and why.
    pub fn missing<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !self.is_provided(n))
            .map(|n| {
                let why = builtin(n).map(|b| b.note).unwrap_or("unknown");
                format!("built-in service {n} is not provided by lichen ({why}); components that depend on it will not find it")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_registrations_decide_what_is_provided() {
        let p = ProvidedBuiltins::default();
        assert!(p.is_provided("aws.greengrass.Nucleus"));
        assert!(p.is_provided("aws.greengrass.clientdevices.Auth"));
        assert!(!p.is_provided("aws.greengrass.SecretManager"));
        let names: Vec<String> = ["aws.greengrass.Nucleus", "aws.greengrass.SecretManager"]
            .map(String::from)
            .to_vec();
        let missing = p.missing(&names);
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0].contains("aws.greengrass.SecretManager"),
            "{missing:?}"
        );
        assert!(p.provide("aws.greengrass.SecretManager"));
        assert!(p.missing(&names).is_empty());
        assert!(!p.provide("com.example.NotBuiltin"));
        assert_eq!(BUILTIN_COMPONENTS.len(), BUILTINS.len());
        assert!(is_builtin("aws.greengrass.LambdaManager"));
    }
}
