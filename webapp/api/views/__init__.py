"""The API's endpoints, one module per resource; `webapp.api.urls` maps them to paths."""
