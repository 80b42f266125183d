"use strict";
// Live status of a blockcache endpoint. State arrives from /events: a
// snapshot, then deltas of changed chunk ranges. The chunk map is drawn on a
// canvas; only cells that changed are redrawn, once per animation frame.
(function () {
  var COLORS = ["#d9dde3", "#e0a800", "#d6336c", "#2e9d4f", "#6f2dbd"]; // missing, in flight, demanded, complete, damaged
  var MAX_CELLS = 4096; // more chunks than this: one cell per group of chunks
  var objs = new Map(); // key -> {rec, cells: Uint8Array, counts: [5]}
  var selected = null;
  var events = 0;
  var grid = null; // {key, group, groups, cols, size, gap, byGroup: [5 arrays]}
  var dirty = new Set();
  var full = true;
  var frame = 0;
  var $ = function (id) { return document.getElementById(id); };
  var canvas = $("map");
  var ctx = canvas.getContext("2d");

  function fmtBytes(n) {
    if (n == null) return "-";
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }
  function fmtEta(s) {
    if (s == null) return "-";
    if (s < 60) return Math.ceil(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }
  function pct(r) { return r.length ? (100 * r.bytes_done / r.length) : 100; }

  function ensure(rec) {
    var o = objs.get(rec.key);
    if (!o || o.cells.length !== rec.chunks_total) {
      o = { rec: rec, cells: new Uint8Array(rec.chunks_total), counts: [rec.chunks_total, 0, 0, 0, 0] };
      objs.set(rec.key, o);
      if (rec.key === selected) full = true;
    }
    o.rec = rec;
    return o;
  }
  function setCells(o, key, runs) {
    var g = grid && grid.key === key ? grid : null;
    for (var i = 0; i < runs.length; i++) {
      var a = runs[i][0], b = runs[i][1], code = runs[i][2];
      for (var c = a; c < b && c < o.cells.length; c++) {
        var old = o.cells[c];
        if (old === code) continue;
        o.cells[c] = code;
        o.counts[old]--; o.counts[code]++;
        if (g) {
          var k = (c / g.group) | 0;
          g.byGroup[old][k]--; g.byGroup[code][k]++;
          dirty.add(k);
        }
      }
    }
  }
  function applySnapshot(s) {
    var seen = new Set();
    s.objects.forEach(function (rec) {
      var o = ensure(rec);
      o.cells.fill(0);
      o.counts = [o.cells.length, 0, 0, 0, 0];
      if (rec.key === selected) full = true;
      setCells(o, rec.key, rec.map || []);
      seen.add(rec.key);
    });
    Array.from(objs.keys()).forEach(function (k) { if (!seen.has(k)) objs.delete(k); });
    storeLine(s.store);
    mirrorList(s.mirrors);
    full = true;
  }
  function applyDelta(d) {
    (d.objects || []).forEach(function (rec) {
      var o = ensure(rec);
      if (rec.cells) setCells(o, rec.key, rec.cells);
    });
    (d.removed || []).forEach(function (k) { objs.delete(k); });
    if (d.store) storeLine(d.store);
    if (d.mirrors) mirrorList(d.mirrors);
  }

  function storeLine(s) {
    $("store").textContent = s.objects + (s.objects === 1 ? " object, " : " objects, ") + fmtBytes(s.bytes) + " on disk, " +
      (s.free_bytes == null ? "free space unknown" : fmtBytes(s.free_bytes) + " free") +
      (s.max_bytes == null ? ", no size limit" : ", limit " + fmtBytes(s.max_bytes));
  }
  function mirrorList(ms) {
    var ul = $("mirrors");
    ul.textContent = "";
    ms.forEach(function (m) {
      var li = document.createElement("li");
      li.textContent = "/m/" + m.name + "/ \u2192 " + m.base;
      m.errors.slice(-3).forEach(function (e) {
        var d = document.createElement("div");
        d.className = "err";
        d.textContent = new Date(e.unix * 1000).toLocaleTimeString() + " " + e.url + ": " + e.error;
        li.appendChild(d);
      });
      ul.appendChild(li);
    });
    $("mirrors-none").hidden = ms.length > 0;
  }

  function pickSelected() {
    if (selected && objs.has(selected)) return;
    selected = null;
    objs.forEach(function (o, k) {
      if (!selected || (/filling|following/.test(o.rec.state) && !/filling|following/.test(objs.get(selected).rec.state))) selected = k;
    });
    full = true;
  }

  function renderTable() {
    var tb = $("rows");
    var keys = Array.from(objs.keys());
    var rows = tb.rows;
    while (rows.length > keys.length) tb.deleteRow(-1);
    while (rows.length < keys.length) {
      var tr = tb.insertRow(-1);
      for (var i = 0; i < 9; i++) tr.insertCell(-1);
      tr.cells[0].appendChild(document.createElement("span"));
      tr.cells[0].appendChild(document.createTextNode(" "));
      var sh = document.createElement("span"); sh.className = "short"; tr.cells[0].appendChild(sh);
      tr.cells[2].appendChild(document.createElement("span"));
      [1, 3, 4, 5, 6, 7].forEach(function (j) { tr.cells[j].className = "num"; });
      tr.addEventListener("click", function () { selected = this.dataset.key; full = true; schedule(); });
    }
    keys.forEach(function (k, i) {
      var r = objs.get(k).rec, tr = rows[i];
      tr.dataset.key = k;
      tr.dataset.state = r.state;
      tr.className = k === selected ? "sel" : "";
      tr.cells[0].firstChild.textContent = r.name;
      tr.cells[0].lastChild.textContent = r.short || "";
      tr.cells[1].textContent = fmtBytes(r.length);
      var st = tr.cells[2].firstChild;
      st.className = "st st-" + r.state;
      st.textContent = r.state + (r.filler_pid ? " pid " + r.filler_pid : "");
      st.title = r.error || "";
      tr.cells[3].textContent = pct(r).toFixed(1) + " %";
      tr.cells[4].textContent = r.bytes_per_second > 0 ? fmtBytes(Math.round(r.bytes_per_second)) + "/s" : "-";
      tr.cells[5].textContent = fmtEta(r.eta_seconds);
      tr.cells[6].textContent = String(r.readers);
      tr.cells[7].textContent = r.origin_bytes == null ? "-" : fmtBytes(r.origin_bytes) + " (" + (r.length ? (r.origin_bytes / r.length).toFixed(2) : "0") + "\u00d7)";
      tr.cells[8].textContent = r.error ? r.error : r.url;
      tr.cells[8].className = r.error ? "err" : "";
    });
    $("none").hidden = keys.length > 0;
  }

  function layout(o) {
    var n = o.cells.length;
    var group = Math.max(1, Math.ceil(n / MAX_CELLS));
    var groups = Math.ceil(n / group);
    var width = Math.max(200, canvas.parentNode.clientWidth);
    var size = Math.max(4, Math.min(16, Math.floor(Math.sqrt(width * 420 / Math.max(groups, 1)))));
    var cols = Math.max(1, Math.floor(width / size));
    var rowsN = Math.ceil(groups / cols);
    var g = { key: selected, group: group, groups: groups, cols: cols, size: size, gap: size > 5 ? 1 : 0, byGroup: [] };
    for (var s = 0; s < 5; s++) g.byGroup.push(new Uint32Array(groups));
    for (var c = 0; c < n; c++) g.byGroup[o.cells[c]][(c / group) | 0]++;
    var dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cols * size * dpr);
    canvas.height = Math.round(rowsN * size * dpr);
    canvas.style.height = rowsN * size + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return g;
  }
  function mix(a, b, t) {
    var pa = parseInt(a.slice(1), 16), pb = parseInt(b.slice(1), 16);
    var r = Math.round(((pa >> 16) & 255) * (1 - t) + ((pb >> 16) & 255) * t);
    var gg = Math.round(((pa >> 8) & 255) * (1 - t) + ((pb >> 8) & 255) * t);
    var bl = Math.round((pa & 255) * (1 - t) + (pb & 255) * t);
    return "rgb(" + r + "," + gg + "," + bl + ")";
  }
  function drawCell(k) {
    var g = grid, total = 0, s;
    for (s = 0; s < 5; s++) total += g.byGroup[s][k];
    var color;
    if (g.byGroup[4][k]) color = COLORS[4];
    else if (g.byGroup[2][k]) color = COLORS[2];
    else if (g.byGroup[3][k] === total) color = COLORS[3];
    else if (g.byGroup[1][k]) color = COLORS[1];
    else color = mix(COLORS[0], COLORS[3], total ? g.byGroup[3][k] / total : 0);
    var x = (k % g.cols) * g.size, y = ((k / g.cols) | 0) * g.size;
    ctx.clearRect(x, y, g.size, g.size);
    ctx.fillStyle = color;
    ctx.fillRect(x, y, g.size - g.gap, g.size - g.gap);
  }
  function draw() {
    frame = 0;
    pickSelected();
    renderTable();
    var o = selected && objs.get(selected);
    var m = canvas.dataset;
    if (!o) { ctx.clearRect(0, 0, canvas.width, canvas.height); m.key = ""; $("detail").hidden = true; return; }
    $("detail").hidden = false;
    if (full || !grid || grid.key !== selected) {
      grid = layout(o);
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      for (var k = 0; k < grid.groups; k++) drawCell(k);
      full = false;
    } else {
      dirty.forEach(drawCell);
    }
    dirty.clear();
    var r = o.rec;
    $("title").textContent = r.name + (r.short ? " " + r.short : "") + " \u2014 " + o.cells.length + " chunks of " + fmtBytes(r.chunk_size) +
      (grid.group > 1 ? ", one cell per " + grid.group + " chunks" : ", one cell per chunk");
    var last = -1;
    for (var c = o.cells.length - 1; c >= 0; c--) if (o.cells[c] === 2) { last = c; break; }
    m.key = selected;
    m.chunks = o.cells.length;
    m.group = grid.group;
    m.missing = o.counts[0];
    m.inflight = o.counts[1];
    m.demanded = o.counts[2];
    m.complete = o.counts[3];
    m.damaged = o.counts[4];
    m.demandedMax = last;
    m.events = events;
  }
  function schedule() { if (!frame) frame = requestAnimationFrame(draw); }

  window.addEventListener("resize", function () { full = true; schedule(); });
  var es = new EventSource("/events");
  es.addEventListener("snapshot", function (e) { events++; applySnapshot(JSON.parse(e.data)); schedule(); });
  es.addEventListener("delta", function (e) { events++; applyDelta(JSON.parse(e.data)); schedule(); });
  es.onopen = function () { $("conn").textContent = "live"; $("conn").className = ""; };
  es.onerror = function () { $("conn").textContent = "reconnecting\u2026"; $("conn").className = "down"; };
})();
