//! How a failed deployment is reported, in Greengrass's terms: `errorStack` lists error
//! codes from the most general (`DEPLOYMENT_FAILURE`) to the most specific, `errorTypes` the
//! categories the fleet groups failures by (greengrass-dg/deployment-health-notifications.md),
//! and `failureCause` is the message naming what failed.

/// The first code of every failed deployment's error stack.
pub const DEPLOYMENT_FAILURE: &str = "DEPLOYMENT_FAILURE";
/// The code of a deployment the core stopped in while applying it (rolled back at the next
/// start). The fleet agent runs such a deployment again.
pub const CORE_RESTARTED: &str = "CORE_RESTARTED";

/// The error stack of a failure whose specific code is `code`.
pub fn error_stack(code: &str) -> Vec<String> {
    vec![DEPLOYMENT_FAILURE.to_string(), code.to_string()]
}

/// The Greengrass error type (category) of an error code the engine reports.
pub fn error_type(code: &str) -> &'static str {
    match code {
        "INVALID_VERSION"
        | "INVALID_CONFIGURATION_UPDATE"
        | "INVALID_RECIPE_DIRECTORY"
        | "INVALID_ARTIFACTS_DIRECTORY"
        | "INVALID_RUN_WITH"
        | "TOO_MANY_GROUPS" => "REQUEST_ERROR",
        "NO_AVAILABLE_COMPONENT_VERSION" | "COMPONENT_NOT_FOUND" | "TOO_MANY_COMPONENTS" => {
            "DEPENDENCY_ERROR"
        }
        "RECIPE_PARSE_ERROR" | "NO_MATCHING_PLATFORM" => "COMPONENT_RECIPE_ERROR",
        "COMPONENT_CONFIGURATION_NOT_VALID" | "COMPONENT_UPDATE_ERROR" => "USER_COMPONENT_ERROR",
        "IO_ERROR" | "ARTIFACT_ERROR" => "DEVICE_ERROR",
        "CORE_RESTARTED" | "CORE_CRASH_LOOP" => "NUCLEUS_ERROR",
        _ => "UNKNOWN_ERROR",
    }
}

/// `errorTypes` of a failure with code `code`.
pub fn error_types(code: &str) -> Vec<String> {
    vec![error_type(code).to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_greengrass_categories() {
        assert_eq!(
            error_stack("NO_AVAILABLE_COMPONENT_VERSION"),
            ["DEPLOYMENT_FAILURE", "NO_AVAILABLE_COMPONENT_VERSION"]
        );
        assert_eq!(
            error_types("NO_AVAILABLE_COMPONENT_VERSION"),
            ["DEPENDENCY_ERROR"]
        );
        assert_eq!(error_type("INVALID_VERSION"), "REQUEST_ERROR");
        assert_eq!(error_type("COMPONENT_UPDATE_ERROR"), "USER_COMPONENT_ERROR");
        assert_eq!(error_type("CORE_RESTARTED"), "NUCLEUS_ERROR");
        assert_eq!(error_type("SOMETHING_NEW"), "UNKNOWN_ERROR");
    }
}
