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

/* The explorer: an example, a stream, a layer and a head; a query token (word, patch or special) and where it
   attends. Data: the JSON block #mm-explore-data (see mmdiag/recording/explore.py for its layout). */
(function () {
  "use strict";
  var dataEl = document.getElementById("mm-explore-data");
  if (!dataEl) return;
  var D = JSON.parse(dataEl.textContent);
  var $ = function (id) { return document.getElementById(id); };
  var SVGNS = ["http:", "", "www.w3.org", "2000", "svg"].join("/");  /* the SVG namespace name (not a resource) */
  var st = { ex: 0, stream: null, layer: 0, head: -1, sel: null };
  var cache = {};

  function decode(s) {
    var key = D.examples[st.ex].uid + "/" + st.stream;
    if (cache[key]) return cache[key];
    var raw = atob(s.q), q = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) q[i] = raw.charCodeAt(i);
    var rp = atob(s.peak), pb = new Uint8Array(rp.length);
    for (var j = 0; j < rp.length; j++) pb[j] = rp.charCodeAt(j);
    cache[key] = { q: q, peak: new Float32Array(pb.buffer) };
    return cache[key];
  }
  function stream() { return D.examples[st.ex].streams[st.stream]; }
  /* attention of query i over every display token at (layer l, head h); h < 0: mean over heads */
  function row(l, h, i) {
    var s = stream(), d = s.tokens.length, dec = decode(s), out = new Float64Array(d);
    var heads = h < 0 ? s.heads : 1;
    for (var k = 0; k < heads; k++) {
      var hh = h < 0 ? k : h, base = ((l * s.heads + hh) * d + i), peak = dec.peak[base] / 255;
      for (var j = 0; j < d; j++) out[j] += dec.q[base * d + j] * peak / heads;
    }
    return out;
  }
  function heat(v) { /* v in [0,1] -> css colour (transparent red to yellow) */
    var g = Math.round(40 + 190 * v);
    return "rgba(255," + g + "," + Math.round(40 * v) + "," + (0.85 * v).toFixed(3) + ")";
  }
  function kindsOf(s) { var k = {}; s.kinds.forEach(function (x) { k[x] = true; }); return k; }
  function target(s, selKind) {
    var k = kindsOf(s);
    if (k.word && k.patch) return selKind === "patch" ? "word" : "patch";
    return "special";
  }
  function shareOf(r, s, kind) { var t = 0; for (var j = 0; j < r.length; j++) if (s.kinds[j] === kind) t += r[j]; return t; }
  function queries(s) { /* the default queries of the heatmap when nothing is selected */
    var k = kindsOf(s), want = k.word ? "word" : (k.patch ? "patch" : "special"), out = [];
    s.kinds.forEach(function (x, i) { if (x === want) out.push(i); });
    return out;
  }
  function fill(sel, values, labels, current) {
    sel.innerHTML = "";
    values.forEach(function (v, i) {
      var o = document.createElement("option"); o.value = v; o.textContent = labels[i];
      if (String(v) === String(current)) o.selected = true; sel.appendChild(o);
    });
  }
  function setupStream() {
    var order = ["joint", "cross", "image", "text"], ex = D.examples[st.ex];
    var names = Object.keys(ex.streams).sort(function (a, b) {
      var ia = order.indexOf(a), ib = order.indexOf(b); return (ia < 0 ? 9 : ia) - (ib < 0 ? 9 : ib); });
    if (names.indexOf(st.stream) < 0) st.stream = names[0];
    fill($("ex-stream"), names, names, st.stream);
    var s = stream(), ls = [], ll = [], hs = [-1], hl = ["mean of " + s.heads];
    for (var l = 0; l < s.layers; l++) { ls.push(l); ll.push("block " + (l + 1)); }
    for (var h = 0; h < s.heads; h++) { hs.push(h); hl.push("head " + h); }
    st.layer = Math.min(st.layer, s.layers - 1); st.head = Math.min(st.head, s.heads - 1);
    fill($("ex-layer"), ls, ll, st.layer); fill($("ex-head"), hs, hl, st.head);
    if (st.sel !== null && st.sel >= s.tokens.length) st.sel = null;
    build();
  }
  function build() {
    var ex = D.examples[st.ex], s = stream();
    $("ex-caption").textContent = (ex.uid ? ex.uid + ": " : "") + (ex.caption || "");
    var img = $("ex-image"), words = $("ex-words"), specials = $("ex-specials");
    img.innerHTML = ""; words.innerHTML = ""; specials.innerHTML = "";
    var hasPatches = s.kinds.indexOf("patch") >= 0;
    img.style.display = hasPatches ? "" : "none";
    if (hasPatches && ex.thumbnail && /^data:image\/(png|jpeg);base64,/.test(ex.thumbnail)) {
      var im = document.createElement("img"); im.src = ex.thumbnail; im.alt = "example image"; img.appendChild(im);
    }
    var grid = s.grid || [1, 1], p = 0;
    s.tokens.forEach(function (label, i) {
      var el;
      if (s.kinds[i] === "patch") {
        el = document.createElement("div"); el.className = "cell";
        var r = Math.floor(p / grid[1]), c = p % grid[1]; p += 1;
        el.style.left = (100 * c / grid[1]) + "%"; el.style.top = (100 * r / grid[0]) + "%";
        el.style.width = (100 / grid[1]) + "%"; el.style.height = (100 / grid[0]) + "%";
        el.title = label; img.appendChild(el);
      } else {
        el = document.createElement("span"); el.className = "tok tok-" + s.kinds[i]; el.textContent = label;
        (s.kinds[i] === "word" ? words : specials).appendChild(el);
        if (s.kinds[i] === "word") words.appendChild(document.createTextNode(" "));
      }
      el.id = "ex-tok-" + i; el.dataset.i = i;
      el.addEventListener("mouseenter", function () { if (!st.pinned) { st.sel = i; render(); } });
      el.addEventListener("click", function () { st.sel = i; st.pinned = true; render(); });
    });
    render();
  }
  function render() {
    var s = stream(), d = s.tokens.length;
    var sel = st.sel, r = sel === null ? null : row(st.layer, st.head, sel);
    /* heat: the key's attention relative to the uniform share among keys of its kind, as in the static
       overlays: none at 1x (or below), full at FULL x or more */
    var FULL = 4, sum = {}, cnt = {};
    if (r) for (var j = 0; j < d; j++) { sum[s.kinds[j]] = (sum[s.kinds[j]] || 0) + r[j]; cnt[s.kinds[j]] = (cnt[s.kinds[j]] || 0) + 1; }
    for (var i = 0; i < d; i++) {
      var el = $("ex-tok-" + i);
      if (!el) continue;
      var mean = r ? sum[s.kinds[i]] / cnt[s.kinds[i]] : 0;
      var v = r && mean > 0 ? Math.min(1, Math.max(0, (r[i] / mean - 1) / (FULL - 1))) : 0;
      el.style.background = r ? heat(v) : "";
      el.classList.toggle("sel", i === sel);
      el.dataset.heat = v.toFixed(3);
    }
    var where = "block " + (st.layer + 1) + ", " + (st.head < 0 ? "mean of the heads" : "head " + st.head);
    if (r) {
      var parts = ["patch", "word", "special"].filter(function (k) { return s.kinds.indexOf(k) >= 0; })
        .map(function (k) { return (100 * shareOf(r, s, k)).toFixed(1) + "% on " + (k === "patch" ? "image patches" : k + "s"); });
      $("ex-status").textContent = "\u201c" + s.tokens[sel] + "\u201d (" + where + ") attends " + parts.join(", ") + ".";
    } else {
      $("ex-status").textContent = "Hover or click a word, a patch or a special token to see where it attends (" + where + ").";
    }
    $("explorer").dataset.state = [st.ex, st.stream, st.layer, st.head, sel === null ? "" : sel].join("|");
    heatmap();
  }
  function heatmap() {
    var s = stream(), sel = st.sel, selKind = sel === null ? queries(s).length && s.kinds[queries(s)[0]] : s.kinds[sel];
    var tgt = target(s, selKind), qs = sel === null ? queries(s) : [sel];
    var cw = Math.max(14, Math.min(30, Math.floor(420 / s.heads))), ch = Math.max(12, Math.min(24, Math.floor(300 / s.layers)));
    var left = 64, top = 18, w = Math.max(left + cw * s.heads + 70, 480), h = top + ch * s.layers + 30, vals = [], vmax = 0;
    for (var l = 0; l < s.layers; l++) for (var hh = 0; hh < s.heads; hh++) {
      var t = 0; qs.forEach(function (q) { t += shareOf(row(l, hh, q), s, tgt); });
      t = qs.length ? t / qs.length : 0; vals.push(t); vmax = Math.max(vmax, t);
    }
    var svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("font-size", "10");
    function text(x, y, s2, anchor) { var e = document.createElementNS(SVGNS, "text"); e.setAttribute("x", x); e.setAttribute("y", y);
      if (anchor) e.setAttribute("text-anchor", anchor); e.setAttribute("fill", "#57606a"); e.textContent = s2; svg.appendChild(e); }
    for (var l2 = 0; l2 < s.layers; l2++) {
      text(left - 4, top + l2 * ch + ch / 2 + 3, "block " + (l2 + 1), "end");
      for (var h2 = 0; h2 < s.heads; h2++) {
        var v = vals[l2 * s.heads + h2], rc = document.createElementNS(SVGNS, "rect");
        rc.setAttribute("x", left + h2 * cw); rc.setAttribute("y", top + l2 * ch); rc.setAttribute("width", cw - 1); rc.setAttribute("height", ch - 1);
        var g = Math.min(1, Math.max(0, v));  /* the share itself: white 0%, dark blue 100% (comparable across heads) */
        rc.setAttribute("fill", "rgb(" + Math.round(255 - 200 * g) + "," + Math.round(255 - 120 * g) + "," + Math.round(255 - 40 * g) + ")");
        rc.setAttribute("class", "hc" + (l2 === st.layer && h2 === st.head ? " cur" : ""));
        rc.id = "ex-cell-" + l2 + "-" + h2;
        var tt = document.createElementNS(SVGNS, "title"); tt.textContent = "block " + (l2 + 1) + ", head " + h2 + ": " + (100 * v).toFixed(1) + "%"; rc.appendChild(tt);
        (function (L, H) { rc.addEventListener("click", function () { st.layer = L; st.head = H; $("ex-layer").value = L; $("ex-head").value = H; render(); }); })(l2, h2);
        svg.appendChild(rc);
      }
    }
    for (var h3 = 0; h3 < s.heads; h3 += Math.max(1, Math.ceil(s.heads / 12))) text(left + h3 * cw + cw / 2, top - 5, "h" + h3, "middle");
    text(left, h - 8, "white 0% to dark blue 100% (highest here " + (100 * vmax).toFixed(1) + "%) · click a cell to open that head");
    var who = sel === null ? "the " + (selKind || "token") + "s" : "\u201c" + s.tokens[sel] + "\u201d";
    $("ex-heat-title").textContent = "Share of " + who + "'s attention on " + (tgt === "patch" ? "image patches" : tgt + " tokens") + ", per block (rows) and head (columns)";
    var box = $("ex-heat"); box.innerHTML = ""; box.appendChild(svg);
  }
  function hidden() {
    var H = D.hidden, box = $("ex-hidden"), pick = $("ex-hidden-layer");
    if (!H || !box || !pick || !H.layers || !H.layers.length) return;
    fill(pick, H.layers, H.layers.map(function (l) { return "layer " + l + (l === 0 ? " (embeddings)" : ""); }), H.layers[H.layers.length - 1]);
    function draw() {
      var pts = H.points[pick.value] || {}, W = 520, Ht = 360, pad = 30, all = [];
      Object.keys(pts).forEach(function (m) { pts[m].forEach(function (p) { all.push(p); }); });
      if (!all.length) { box.textContent = "no map at this layer"; return; }
      var xs = all.map(function (p) { return p[0]; }), ys = all.map(function (p) { return p[1]; });
      var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
      var sx = function (x) { return pad + (W - 2 * pad) * (x - x0) / ((x1 - x0) || 1); };
      var sy = function (y) { return Ht - pad - (Ht - 2 * pad) * (y - y0) / ((y1 - y0) || 1); };
      var svg = document.createElementNS(SVGNS, "svg"); svg.setAttribute("width", W); svg.setAttribute("height", Ht);
      var colors = { image: "#1f77b4", text: "#ff7f0e" };
      Object.keys(pts).forEach(function (m) {
        pts[m].forEach(function (p, i) {
          var c = document.createElementNS(SVGNS, "circle"); c.setAttribute("cx", sx(p[0]).toFixed(1)); c.setAttribute("cy", sy(p[1]).toFixed(1));
          c.setAttribute("r", 3.5); c.setAttribute("fill", colors[m] || "#2ca02c"); c.setAttribute("fill-opacity", "0.6");
          var cap = (H.captions || [])[i] || "", t = document.createElementNS(SVGNS, "title"); t.textContent = m + " " + i + ": " + cap; c.appendChild(t);
          c.addEventListener("mouseenter", function () { $("ex-hidden-caption").textContent = m + " #" + i + ": " + cap; });
          svg.appendChild(c);
        });
      });
      var lg = document.createElementNS(SVGNS, "text"); lg.setAttribute("x", pad); lg.setAttribute("y", 14); lg.setAttribute("font-size", "11");
      lg.textContent = "blue: image, orange: text · " + (H.method || "PCA") + " (axes: PC 1, PC 2)"; svg.appendChild(lg);
      box.innerHTML = ""; box.appendChild(svg);
    }
    pick.addEventListener("change", draw); draw();
  }
  $("ex-example").addEventListener("change", function (e) { st.ex = +e.target.value; st.sel = null; st.pinned = false; setupStream(); });
  $("ex-stream").addEventListener("change", function (e) { st.stream = e.target.value; st.sel = null; st.pinned = false; setupStream(); });
  $("ex-layer").addEventListener("change", function (e) { st.layer = +e.target.value; render(); });
  $("ex-head").addEventListener("change", function (e) { st.head = +e.target.value; render(); });
  setupStream(); hidden();
  /* test hook: #mm-click=ID,ID clicks those elements after load (the browser test uses it) */
  var m = /mm-click=([^&]+)/.exec(location.hash);
  if (m) decodeURIComponent(m[1]).split(",").forEach(function (id) {
    var el = $(id); if (el) el.dispatchEvent(new MouseEvent("click", { bubbles: true }));
  });
})();
