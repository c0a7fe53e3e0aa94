/* mmdiag report: table filters (status chips, family, text) and the explorer. No network, no globals
   other than window.mmdiag (a small hook the browser tests use). */
(function () {
  "use strict";
  var form = document.getElementById("filters");
  function applyFilters() {
    if (!form) return;
    var on = {}, shown = 0, total = 0;
    form.querySelectorAll("input[name=status]").forEach(function (c) { on[c.value] = c.checked; });
    var fam = form.querySelector("select[name=family]").value;
    var q = form.querySelector("input[name=q]").value.trim().toLowerCase();
    document.querySelectorAll("table.results tbody").forEach(function (tb) {
      var visible = 0;
      tb.querySelectorAll("tr.result").forEach(function (tr) {
        total += 1;
        var ok = on[tr.dataset.status] !== false && (!fam || tr.dataset.family === fam) &&
          (!q || tr.textContent.toLowerCase().indexOf(q) >= 0);
        tr.classList.toggle("hidden", !ok);
        if (ok) { visible += 1; shown += 1; }
      });
      tb.classList.toggle("hidden", visible === 0);
    });
    var count = document.getElementById("filter-count");
    if (count) count.textContent = shown + " of " + total + " results shown";
  }
  if (form) { form.addEventListener("input", applyFilters); form.addEventListener("change", applyFilters); applyFilters(); }
  window.mmdiag = { applyFilters: applyFilters };
})();
