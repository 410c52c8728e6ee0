"""The admin's part in connect links, kept apart so that the apps admin takes it in with
one line: ``actions = [make_connect_links]`` on the app and the connection changelists.

For each selected app a new-connection link, for each selected connection a reconnect
link; each is shown once, in a message, with a copy button (the URL is not stored: whoever
holds it may use it). What a link makes belongs to the admin who made it.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import formats, timezone
from django.utils.html import format_html

from apps_app.models import Connection
from apps_app.services.connect_links import connect_link_create

LINK_MESSAGE = (
    '{}: <input type="text" readonly size="70" value="{}" onclick="this.select()"> '
    '<button type="button" onclick="navigator.clipboard.writeText(this.previousElementSibling.value)">Copy</button>'
    " (usable once, until {})"
)


@admin.action(description="Make a connect link (to send to the account's owner)")
def make_connect_links(modeladmin, request, queryset):
    if not request.user.has_perm("secrets_app.add_secret"):
        messages.error(request, "Making connect links needs the permission to add secrets.")
        return
    for row in queryset:
        target = {"app": row.app, "connection": row} if isinstance(row, Connection) else {"app": row}
        try:
            issued = connect_link_create(acting_user=request.user, **target)
        except (ValidationError, PermissionDenied) as exc:
            reasons = exc.messages if isinstance(exc, ValidationError) else [str(exc)]
            messages.error(request, f"{row}: {' '.join(reasons)}")
            continue
        expires = formats.date_format(timezone.localtime(issued.expires_at), "DATETIME_FORMAT")
        messages.success(request, format_html(LINK_MESSAGE, row, issued.url, expires))
