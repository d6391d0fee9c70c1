"""The API's one error shape, `{"error": {"code", "message", "field"?}}`, and the exception views raise to send it."""
from django.http import JsonResponse

CODES = {
    400: "invalid",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    500: "server_error",
}


class ApiError(Exception):
    """Raised anywhere under an API view; the view decorator turns it into the JSON error response."""

    def __init__(self, status: int, message: str, field: str | None = None, code: str | None = None,
                 headers: dict | None = None, limit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.limit = status, message, field, limit
        self.code = code or CODES[status]
        self.headers = headers or {}

    @classmethod
    def over_quota(cls, exceeded) -> "ApiError":
        """A team quota refusal (webapp.teams.quotas.QuotaExceeded): 429 or 409, code quota_exceeded, its limit."""
        return cls(exceeded.status, exceeded.message, code="quota_exceeded", limit=exceeded.limit)


def error_response(error: ApiError) -> JsonResponse:
    body = {"code": error.code, "message": error.message}
    if error.field:
        body["field"] = error.field
    if error.limit:
        body["limit"] = error.limit
    response = JsonResponse({"error": body}, status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response
