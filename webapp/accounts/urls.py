"""URL routes of the accounts app."""
from django.urls import path

from webapp.accounts import views

app_name = "accounts"
urlpatterns = [
    path("settings/", views.settings_page, name="settings"),
    path("tokens/<int:token_id>/revoke/", views.revoke_token, name="revoke_token"),
]
