// The flow editor: each step on one line (key, kind, a summary), opened on click;
// steps reordered by dragging or with the up/down buttons, their hidden position inputs
// renumbered in the order shown; a copy button for each endpoint's curl command.
// Listeners are delegated to the document, as in kinds.js: rows added by the admin are
// clones of a template row and do not carry listeners.
(function () {
  "use strict";
  var GROUP = "#steps-group";
  var ROWS = GROUP + " .inline-related:not(.empty-form)";
  var dragged = null;

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll(ROWS));
  }

  function field(row, name) {
    return row.querySelector('[name$="-' + name + '"]');
  }

  function renumber() {
    rows().forEach(function (row, index) {
      var position = field(row, "position");
      if (position) position.value = index;
    });
  }

  // A value on one line: JSON and code read well with their line breaks as spaces.
  function oneLine(text, length) {
    var line = String(text || "").replace(/\s+/g, " ").trim();
    return line.length > length ? line.slice(0, length - 1) + "…" : line;
  }

  // A kind's first field says most about a step (a URL, a query, a value); when it is a
  // choice (an HTTP method, a JWT operation) the field after it completes the sentence.
  function summary(row) {
    var kind = field(row, "kind");
    var fieldset = kind && row.querySelector("fieldset.kind-fields-" + kind.value);
    if (!fieldset) return "";
    var inputs = fieldset.querySelectorAll("input:not([type=checkbox]):not([type=hidden]), select, textarea");
    var words = [];
    for (var index = 0; index < inputs.length && index < 2; index++) {
      words.push(oneLine(inputs[index].value, 80));
      if (inputs[index].tagName !== "SELECT") break;
    }
    return words.join(" ");
  }

  function describe(row) {
    var line = row.querySelector(".step-line");
    if (!line) return;
    var key = field(row, "key");
    var kind = field(row, "kind");
    line.querySelector(".step-key").textContent = (key && key.value) || "(new step)";
    line.querySelector(".step-kind").textContent = kind && kind.value ? kind.options[kind.selectedIndex].text : "";
    line.querySelector(".step-summary").textContent = summary(row);
  }

  function button(className, label, text) {
    var element = document.createElement("button");
    element.type = "button";
    element.className = className;
    element.setAttribute("aria-label", label);
    element.title = label;
    element.textContent = text;
    return element;
  }

  function setOpen(row, open) {
    row.classList.toggle("step-collapsed", !open);
    row.querySelector(".step-line").setAttribute("aria-expanded", String(open));
  }

  function enhance(row, open) {
    if (row.querySelector(".step-line")) return;
    var heading = row.querySelector("h3");
    var handle = document.createElement("span");
    handle.className = "step-handle";
    handle.draggable = true;
    handle.title = "Drag to reorder";
    handle.textContent = "⠿";
    var line = document.createElement("button");
    line.type = "button";
    line.className = "step-line";
    line.title = "Show or hide this step's settings";
    ["step-key", "step-kind", "step-summary"].forEach(function (name) {
      var part = document.createElement("span");
      part.className = name;
      line.appendChild(part);
    });
    var moves = document.createElement("span");
    moves.className = "step-moves";
    moves.appendChild(button("step-up", "Move this step up", "↑"));
    moves.appendChild(button("step-down", "Move this step down", "↓"));
    heading.insertBefore(handle, heading.firstChild);
    heading.insertBefore(line, handle.nextSibling);
    heading.appendChild(moves);
    describe(row);
    // A step with an error stays open, so the error is seen beside its field.
    setOpen(row, open || !!row.querySelector(".errorlist"));
  }

  function move(row, before) {
    row.parentNode.insertBefore(row, before);
    renumber();
  }

  function moveBy(row, offset) {
    var all = rows();
    var index = all.indexOf(row) + offset;
    if (index < 0 || index >= all.length) return;
    move(row, offset < 0 ? all[index] : all[index].nextSibling);
  }

  document.addEventListener("click", function (event) {
    var copy = event.target.closest(".copy-button");
    if (copy) return copyCommand(copy);
    var heading = event.target.closest(ROWS + " > h3");
    if (!heading) return;
    var row = heading.parentNode;
    var moveButton = event.target.closest(".step-up, .step-down");
    if (moveButton) {
      moveBy(row, moveButton.classList.contains("step-up") ? -1 : 1);
      moveButton.focus(); // keeps the keyboard on the step just moved
    } else if (!event.target.closest("a, input, label, .step-handle")) {
      // The line, or the heading around it: the delete controls keep their own meaning.
      setOpen(row, row.classList.contains("step-collapsed"));
    }
  });

  ["input", "change"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      var row = event.target.closest && event.target.closest(ROWS);
      if (row) describe(row);
    });
  });

  // Dragging: a step dropped on another goes before it when moved up, after it when
  // moved down (as in any sortable list).
  document.addEventListener("dragstart", function (event) {
    if (!event.target.closest || !event.target.closest(ROWS + " .step-handle")) return;
    dragged = event.target.closest(ROWS);
    dragged.classList.add("step-dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", dragged.id);
  });

  document.addEventListener("dragover", function (event) {
    var target = dragged && event.target.closest && event.target.closest(ROWS);
    if (!target) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
  });

  document.addEventListener("drop", function (event) {
    var target = dragged && event.target.closest && event.target.closest(ROWS);
    if (!target) return;
    event.preventDefault();
    if (target !== dragged) {
      var all = rows();
      var upwards = all.indexOf(dragged) > all.indexOf(target);
      move(dragged, upwards ? target : target.nextSibling);
    }
  });

  document.addEventListener("dragend", function () {
    if (dragged) dragged.classList.remove("step-dragging");
    dragged = null;
  });

  function copyCommand(copy) {
    var command = copy.closest(".hook-call").querySelector(".hook-curl");
    function done() {
      copy.textContent = "Copied";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(command.textContent).then(done);
      return;
    }
    // Plain http to another host: the clipboard API is missing; copy the selection.
    var range = document.createRange();
    range.selectNodeContents(command);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (document.execCommand("copy")) done();
  }

  // A page shown again after an error lists the forms in the order they were added:
  // show them in the order the person chose (their positions) before numbering them again.
  function sortByPosition() {
    var all = rows();
    if (!all.length) return;
    var end = all[all.length - 1].nextSibling;
    all
      .map(function (row, index) {
        var position = parseInt((field(row, "position") || {}).value, 10);
        return { row: row, key: isNaN(position) ? index : position, index: index };
      })
      .sort(function (a, b) {
        return a.key - b.key || a.index - b.index;
      })
      .forEach(function (item) {
        item.row.parentNode.insertBefore(item.row, end);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    sortByPosition();
    rows().forEach(function (row) {
      enhance(row, false);
    });
    renumber();
  });

  document.addEventListener("formset:added", function (event) {
    if (event.detail.formsetName !== "steps") return;
    enhance(event.target, true);
    renumber();
  });

  document.addEventListener("formset:removed", function (event) {
    if (event.detail.formsetName === "steps") renumber();
  });
})();
