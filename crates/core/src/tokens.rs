//! SVCUID tokens: one unguessable token per component, handed over only through the
//! component's environment and mapped back to the component by the IPC server.

use std::collections::HashMap;
use std::sync::RwLock;

use rand::Rng;

#[derive(Default)]
pub struct TokenRegistry {
    by_token: RwLock<HashMap<String, String>>,
    by_component: RwLock<HashMap<String, String>>,
}

impl TokenRegistry {
    /// The component's token, minted on first use. 128 random bits, upper-case hex like the
    /// tokens Greengrass issues.
    pub fn token_for(&self, component: &str) -> String {
        if let Some(t) = self
            .by_component
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(component)
        {
            return t.clone();
        }
        let mut by_component = self.by_component.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = by_component.get(component) {
            return t.clone();
        }
        let bytes: [u8; 16] = rand::rng().random();
        let token = hex::encode_upper(bytes);
        by_component.insert(component.to_string(), token.clone());
        self.by_token
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), component.to_string());
        token
    }

    pub fn component_for(&self, token: &str) -> Option<String> {
        self.by_token
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    /// Invalidates a removed component's token.
    pub fn revoke(&self, component: &str) {
        if let Some(t) = self
            .by_component
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(component)
        {
            self.by_token
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_unique_and_revocable() {
        let r = TokenRegistry::default();
        let a = r.token_for("a");
        assert_eq!(a.len(), 32);
        assert_eq!(r.token_for("a"), a);
        let b = r.token_for("b");
        assert_ne!(a, b);
        assert_eq!(r.component_for(&a).as_deref(), Some("a"));
        r.revoke("a");
        assert_eq!(r.component_for(&a), None);
        assert_eq!(r.component_for("nonsense"), None);
    }
}
