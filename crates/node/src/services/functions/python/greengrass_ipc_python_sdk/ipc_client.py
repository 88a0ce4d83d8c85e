# The client side of the Greengrass v1 "Lambda IPC": HTTP/1.1 to the core on
# localhost:GG_DAEMON_PORT, as greengrasssdk (1.6.1) expects. Written for lichen with the
# public names the SDK uses (IPCClient, IPCException, post_work, get_work_result).
import http.client
import logging
import os

HTTP_TIMEOUT_SECONDS = 70  # longer than the core's longest invocation wait

_log = logging.getLogger(__name__)


class IPCException(Exception):
    pass


class WorkResult:
    def __init__(self, payload, func_err):
        self.payload = payload
        self.func_err = func_err


class IPCClient:
    def __init__(self, endpoint="localhost", port=None):
        self.endpoint = endpoint
        self.port = int(port or os.environ.get("GG_DAEMON_PORT", "8000"))
        self.auth_token = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "")

    @staticmethod
    def _path(function_arn):
        return "/2016-11-01/functions/{}".format(function_arn)

    def _request(self, method, path, body, headers):
        headers = dict(headers)
        headers["Authorization"] = self.auth_token
        try:
            conn = http.client.HTTPConnection(self.endpoint, self.port, timeout=HTTP_TIMEOUT_SECONDS)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            raise IPCException("cannot reach the core on port {}: {}".format(self.port, e))
        if response.status >= 300:
            raise IPCException(data.decode("utf-8", "replace"))
        return response, data

    def post_work(self, function_arn, payload, client_context=None, invocation_type="RequestResponse"):
        if payload is None:
            payload = b""
        elif isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif hasattr(payload, "read"):
            payload = payload.read()
        if isinstance(client_context, bytes):
            client_context = client_context.decode()
        headers = {"X-Amz-Invocation-Type": invocation_type or "RequestResponse"}
        if client_context:
            headers["X-Amz-Client-Context"] = client_context
        response, _ = self._request("POST", self._path(function_arn), payload, headers)
        return response.getheader("X-Amz-InvocationId")

    def get_work_result(self, function_arn, invocation_id):
        response, data = self._request(
            "GET", self._path(function_arn), None, {"X-Amz-InvocationId": invocation_id or ""}
        )
        return WorkResult(data, response.getheader("X-Amz-Function-Error") or "")

    # The runtime side of the v1 API: lichen runs instances under the AWS Lambda Runtime API
    # instead, so a handler never needs these.
    def get_work(self, function_arn):
        raise IPCException("get_work: lichen runs functions under the Lambda Runtime API")

    def post_work_result(self, function_arn, work_item):
        raise IPCException("post_work_result: lichen runs functions under the Lambda Runtime API")

    def post_handler_err(self, function_arn, invocation_id, handler_err):
        raise IPCException("post_handler_err: lichen runs functions under the Lambda Runtime API")
