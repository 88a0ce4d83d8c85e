# Lambda function ARNs: arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>].
ARN_FIELD_COUNT_WITH_QUALIFIER = 8


class FunctionArnFields:
    def __init__(self, function_arn):
        if not function_arn:
            raise ValueError("function ARN is empty")
        parts = function_arn.split(":")
        if len(parts) < 7 or parts[0] != "arn" or parts[2] != "lambda" or parts[5] != "function":
            raise ValueError("not a Lambda function ARN: {}".format(function_arn))
        self.arn = function_arn
        self.region = parts[3]
        self.account_id = parts[4]
        self.name = parts[6]
        self.qualifier = parts[7] if len(parts) >= ARN_FIELD_COUNT_WITH_QUALIFIER else ""
        self.unqualified_arn = ":".join(parts[:7])

    @staticmethod
    def build_arn_string(region, account_id, name, qualifier):
        arn = "arn:aws:lambda:{}:{}:function:{}".format(region, account_id, name)
        return "{}:{}".format(arn, qualifier) if qualifier else arn

    @staticmethod
    def build_function_arn(unqualified_arn, qualifier=None):
        return "{}:{}".format(unqualified_arn, qualifier) if qualifier else unqualified_arn
