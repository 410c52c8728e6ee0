"""The admin's piece of notices: the App form's notice flow field, checked by the service.

The App admin includes ``AppNoticeFlowForm``'s field (or subclasses it) and saves the
value with ``apps_app.services.notices.app_notice_flow_set``.
"""

from django import forms
from django.core.exceptions import ValidationError

from apps_app.models import App
from apps_app.services.notices import notice_flow_check


class AppNoticeFlowForm(forms.ModelForm):
    class Meta:
        model = App
        fields = ["notice_flow"]

    def clean_notice_flow(self):
        try:
            return notice_flow_check(self.cleaned_data.get("notice_flow") or "")
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["notice_flow"]) from None
