"""AWS's error shapes for the JSON protocols: ``{"__type": "...Exception", "message": "..."}`` and a status."""

from __future__ import annotations


class AwsApiError(Exception):
    """An error the API answers with, in AWS's words (``type`` is the error shape's name)."""

    def __init__(self, type_: str, message: str, status: int = 400):
        super().__init__(message)
        self.type = type_
        self.message = message
        self.status = status

    def body(self) -> dict[str, str]:
        return {"__type": self.type, "message": self.message}


def client_exception(message: str) -> AwsApiError:
    return AwsApiError("ClientException", message)


def invalid_parameter(message: str) -> AwsApiError:
    return AwsApiError("InvalidParameterException", message)


def validation_exception(message: str) -> AwsApiError:
    """Application Auto Scaling's refusal of a bad request."""
    return AwsApiError("ValidationException", message)
