// Show, in each step of a flow, only the fields of the step's kind.
// Listeners are delegated to the document: the admin adds a step by cloning a hidden
// template row, and a clone does not carry the listeners of its template.
(function () {
  "use strict";
  function update(select) {
    var step = select.closest(".inline-related");
    if (!step) return;
    step.querySelectorAll("fieldset.step-kind-fields").forEach(function (fieldset) {
      fieldset.style.display = fieldset.classList.contains("step-kind-" + select.value) ? "" : "none";
    });
  }
  function updateAll(root) {
    root.querySelectorAll("select.step-kind-select").forEach(update);
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("select.step-kind-select")) update(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () { updateAll(document); });
  document.addEventListener("formset:added", function (event) { updateAll(event.target); });
})();
