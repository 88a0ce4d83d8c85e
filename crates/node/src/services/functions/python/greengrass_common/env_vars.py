# The environment lichen gives a Lambda instance (names as the Greengrass runtime's).
import os

MY_FUNCTION_ARN = os.environ.get("MY_FUNCTION_ARN")
SHADOW_FUNCTION_ARN = os.environ.get("SHADOW_FUNCTION_ARN")
ROUTER_FUNCTION_ARN = os.environ.get("ROUTER_FUNCTION_ARN")
SECRETS_MANAGER_FUNCTION_ARN = os.environ.get("SECRETS_MANAGER_FUNCTION_ARN")
AUTH_TOKEN = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
GG_DAEMON_PORT = os.environ.get("GG_DAEMON_PORT", "8000")
ENCODING_TYPE = os.environ.get("ENCODING_TYPE", "json")
