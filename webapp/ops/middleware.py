"""Serves /healthz ahead of every other middleware, so compose's and a load balancer's probes get an answer.

Those probes call the container by address (Host 127.0.0.1) over plain HTTP, which ALLOWED_HOSTS would refuse
with 400 and SECURE_SSL_REDIRECT would send to https. So this middleware comes first and answers without ever
calling request.get_host(); the check itself is webapp.ops.views.healthz (database and Redis, nothing secret).
"""
from webapp.ops.views import healthz

HEALTH_PATH = "/healthz"


class HealthzMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info == HEALTH_PATH:
            return healthz(request)
        return self.get_response(request)
