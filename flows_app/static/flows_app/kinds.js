// Show, in each step or endpoint of a flow, only the fields of its chosen kind.
// Listeners are delegated to the document: the admin adds a row by cloning a hidden
// template row, and a clone does not carry the listeners of its template.
(function () {
  "use strict";
  function update(select) {
    var row = select.closest(".inline-related");
    if (!row) return;
    row.querySelectorAll("fieldset.kind-fields").forEach(function (fieldset) {
      fieldset.style.display = fieldset.classList.contains("kind-fields-" + select.value) ? "" : "none";
    });
  }
  function updateAll(root) {
    root.querySelectorAll("select.kind-select").forEach(update);
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("select.kind-select")) update(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () { updateAll(document); });
  document.addEventListener("formset:added", function (event) { updateAll(event.target); });
})();
