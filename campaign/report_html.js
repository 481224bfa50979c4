/*
 * report_html.js - the charts of `ringmail report --format html`
 *
 * Reads the report document (the JSON of `--format json`) from the page's
 * JSON script element "report-data" and draws it with
 * uPlot (inlined before this script). Every text comes from the document
 * through textContent or uPlot's labels, never as HTML. window.reportCharts
 * lists each chart drawn ({id, title, series, points, drawn}) for the tests.
 */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var root = document.getElementById("charts");
  var charts = [];
  window.reportCharts = charts;

  var OUTCOMES = ["accepted", "deferred", "rejected", "failed", "expired"];
  var COLOR = {accepted: "#2e8b57", deferred: "#e08a00", rejected: "#c0392b",
               failed: "#7f7f7f", expired: "#8e44ad"};
  var PALETTE = ["#1f77b4", "#e08a00", "#2e8b57", "#c0392b", "#8e44ad", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var MAX_ISPS = 12;    /* per-ISP charts: the ISPs with the most attempts */
  var MAX_REASONS = 8;  /* per chart; the rest add up as "other" */

  function utc(s) {
    var t = Date.parse(s);
    if (isNaN(t)) throw new Error("report: not a time: " + s);
    return t / 1000;
  }

  function el(tag, cls, text, parent) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    (parent || root).appendChild(e);
    return e;
  }

  function section(title, note) {
    var s = el("section", "charts");
    el("h2", null, title, s);
    if (note) el("p", "note", note, s);
    return s;
  }

  function width() {
    return Math.max(320, Math.min(root.clientWidth || 900, 1100) - 10);
  }

  function plot(parent, id, title, opts, data) {
    var box = el("div", "chart", null, parent);
    box.id = id;
    var rec = {id: id, title: title, series: data.length - 1, points: data[0].length, drawn: false};
    opts.title = title;
    opts.width = width();
    opts.height = opts.height || 230;
    opts.hooks = {draw: [function () { rec.drawn = true; }]};
    new uPlot(opts, data, box);
    charts.push(rec);
  }

  /* counts start at 0 */
  function fromZero(u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; }

  /* "2026-05-01 10:07" in UTC, the date only where it changes */
  function hhmm(u, splits) {
    var day = null;
    return splits.map(function (t) {
      var iso = new Date(t * 1e3).toISOString(), d = iso.slice(0, 10), hm = iso.slice(11, 16);
      var label = d === day ? hm : hm + "\n" + d;
      day = d;
      return label;
    });
  }

  /* a time chart: xs (seconds), each of list {label, values, color} a stepped line */
  function timeChart(parent, id, title, xs, list, unit) {
    var few = xs.length < 3;
    var opts = {
      scales: {x: {time: true}, y: {range: fromZero}},
      series: [{label: "UTC", value: function (u, t) {
        return t == null ? "" : new Date(t * 1e3).toISOString().slice(0, 16).replace("T", " ");
      }}].concat(list.map(function (s) {
        return {label: s.label, stroke: s.color, width: 1.5, points: {show: few},
                paths: uPlot.paths.stepped({align: 1})};
      })),
      axes: [{space: 70, size: 50, values: hhmm}, {label: unit || "per minute"}]
    };
    plot(parent, id, title, opts, [xs].concat(list.map(function (s) { return s.values; })));
  }

  /* a bar chart: labels on x, each of list {label, values, color} a bar beside the others */
  function barChart(parent, id, title, labels, list) {
    var n = list.length, size = 0.7 / n;
    var opts = {
      height: 260,
      scales: {x: {time: false, range: [-0.5, labels.length - 0.5]}, y: {range: fromZero}},
      series: [{label: "", value: function (u, i) { return i == null ? "" : labels[i]; }}]
        .concat(list.map(function (s, k) {
          return {label: s.label, fill: s.color, stroke: s.color, width: 0, points: {show: false},
                  paths: uPlot.paths.bars({size: [size, 60], align: n == 1 ? 0 : (k == 0 ? -1 : 1)})};
        })),
      axes: [{rotate: labels.length > 4 ? -25 : 0, size: labels.length > 4 ? 90 : 40,
              splits: function () { return labels.map(function (_, i) { return i; }); },
              values: function (u, splits) {
                return splits.map(function (i) {
                  var l = labels[i] == null ? "" : String(labels[i]);
                  return l.length > 28 ? l.slice(0, 27) + "\u2026" : l;
                });
              }},
             {}]
    };
    var xs = labels.map(function (_, i) { return i; });
    plot(parent, id, title, opts, [xs].concat(list.map(function (s) { return s.values; })));
  }

  var minutes = (D.throughput || []).map(function (r) { return r.minute; });
  var xs = minutes.map(utc);
  var index = {};
  minutes.forEach(function (m, i) { index[m] = i; });

  function zeros() { return minutes.map(function () { return 0; }); }

  /* ---- attempts per minute: all ISPs, then each ISP ---- */
  if (minutes.length) {
    var s = section("Attempts per minute",
                    "Every minute from the first attempt to the last (UTC), empty ones included.");
    timeChart(s, "chart-all", "all ISPs", xs, OUTCOMES.map(function (o) {
      return {label: o, color: COLOR[o], values: D.throughput.map(function (r) { return r[o]; })};
    }));
    var byIsp = {};
    (D.isp_minutes || []).forEach(function (r) {
      var a = byIsp[r.isp] || (byIsp[r.isp] = {});
      OUTCOMES.forEach(function (o) {
        (a[o] || (a[o] = zeros()))[index[r.minute]] = r[o];
      });
    });
    var isps = (D.isps || []).map(function (r) { return r.isp; }).filter(function (i) { return byIsp[i]; });
    isps.slice(0, MAX_ISPS).forEach(function (isp, k) {
      timeChart(s, "chart-isp-" + k, isp, xs, OUTCOMES.map(function (o) {
        return {label: o, color: COLOR[o], values: byIsp[isp][o]};
      }));
    });
    if (isps.length > MAX_ISPS)
      el("p", "note", (isps.length - MAX_ISPS) + " more ISPs: see the tables below.", s);
  }

  /* ---- deferral reasons per ISP over time ---- */
  var dm = D.deferral_minutes || [];
  if (dm.length && minutes.length) {
    var s2 = section("Deferrals per minute by reason",
                     "Per ISP, each reason (reason word, reply code, enhanced code) a line; "
                     + "beyond " + MAX_REASONS + " reasons the rest add up as \u201cother\u201d.");
    var per = {}, order = [];
    dm.forEach(function (r) {
      if (!per[r.isp]) { per[r.isp] = {}; order.push(r.isp); }
      var v = per[r.isp][r.reason] || (per[r.isp][r.reason] = {total: 0, values: zeros()});
      v.values[index[r.minute]] += r.deferred;
      v.total += r.deferred;
    });
    order.sort(function (a, b) { return sum(per[b]) - sum(per[a]); });
    order.slice(0, MAX_ISPS).forEach(function (isp, k) {
      var reasons = Object.keys(per[isp]).sort(function (a, b) {
        return per[isp][b].total - per[isp][a].total;
      });
      var list = reasons.slice(0, MAX_REASONS).map(function (r, j) {
        return {label: r, color: PALETTE[j % PALETTE.length], values: per[isp][r].values};
      });
      if (reasons.length > MAX_REASONS) {
        var other = zeros();
        reasons.slice(MAX_REASONS).forEach(function (r) {
          per[isp][r].values.forEach(function (v, i) { other[i] += v; });
        });
        list.push({label: "other", color: "#444", values: other});
      }
      timeChart(s2, "chart-deferrals-" + k, isp, xs, list);
    });
  }

  function sum(reasons) {
    return Object.keys(reasons).reduce(function (t, r) { return t + reasons[r].total; }, 0);
  }

  /* ---- reply codes ---- */
  var rc = (D.reply_codes || []).slice(0, 20);
  if (rc.length) {
    var s3 = section("Reply codes", "Attempts per reply (the 20 most frequent).");
    barChart(s3, "chart-reply-codes", "reply codes",
             rc.map(function (r) {
               return r.code == null ? "no reply" : r.code + (r.enhanced ? " " + r.enhanced : "");
             }),
             [{label: "attempts", color: "#1f77b4", values: rc.map(function (r) { return r.count; })}]);
  }

  /* ---- TLS ---- */
  var tv = D.tls_versions || [], tp = D.tls_posture || [], res = D.resumption || {};
  if (tv.length || tp.length) {
    var hs = res.counted === "handshakes";
    var s4 = section("TLS",
                     "Resumption: " + res.resumed + " of " + (res.resumed + res.full) +
                     (hs ? " TLS handshakes" : " attempts (connections not recorded)") +
                     " resumed. The policy is not recorded per attempt: the posture chart " +
                     "says what each outcome implies of it.");
    if (tv.length)
      barChart(s4, "chart-tls-versions", "TLS versions (attempts that reached a server)",
               tv.map(function (r) { return r.version; }),
               [{label: "attempts", color: "#17becf", values: tv.map(function (r) { return r.count; })}]);
    barChart(s4, "chart-tls-resumption",
             hs ? "TLS handshakes: resumed and full" : "TLS attempts: resumed and full",
             ["resumed", "full"],
             [{label: hs ? "handshakes" : "attempts", color: "#2e8b57",
               values: [res.resumed || 0, res.full || 0]}]);
    if (tp.length)
      barChart(s4, "chart-tls-posture", "TLS posture and the policy it implies",
               tp.map(function (r) { return r.posture + " (" + r.policy + ")"; }),
               [{label: "attempts", color: "#8c564b", values: tp.map(function (r) { return r.attempts; })}]);
  }

  /* ---- bounces by category ---- */
  var cats = {}, bs = D.bounces_synchronous || [], ba = D.bounces_asynchronous || [];
  bs.concat(ba).forEach(function (r) { cats[r.category] = 1; });
  var catList = Object.keys(cats).sort();
  if (catList.length) {
    var s5 = section("Bounces by category",
                     "Synchronous: final SMTP rejections and expiries; asynchronous: bounce reports.");
    var total = function (rows) {
      return catList.map(function (c) {
        return rows.filter(function (r) { return r.category === c; })
          .reduce(function (t, r) { return t + r.bounces + r.soft_bounces; }, 0);
      });
    };
    barChart(s5, "chart-bounces", "bounces (hard and soft) by category", catList,
             [{label: "synchronous", color: "#c0392b", values: total(bs)},
              {label: "asynchronous", color: "#e08a00", values: total(ba)}]);
  }

  /* ---- complaints and unsubscribes ---- */
  var fb = D.feedback || {}, fh = D.feedback_hours || [];
  if (fh.length && (fb.complaints || fb.unsubscribes || fb.bounces || fb.soft_bounces)) {
    var s6 = section("Complaints, unsubscribes and bounce reports per hour",
                     fb.complaints + " complaints, " + fb.unsubscribes + " unsubscribes.");
    timeChart(s6, "chart-feedback", "feedback per hour", fh.map(function (r) { return utc(r.hour); }),
              [{label: "complaints", color: "#c0392b", values: fh.map(function (r) { return r.complaints; })},
               {label: "unsubscribes", color: "#1f77b4", values: fh.map(function (r) { return r.unsubscribes; })},
               {label: "bounce reports", color: "#e08a00", values: fh.map(function (r) { return r.bounces; })}],
              "per hour");
  }

  /* ---- queue age ---- */
  var qa = D.queue_age || [], qs = D.queue_age_summary || {};
  if (qa.length && (qs.final || qs.waiting)) {
    var s7 = section("Queue age",
                     "Recipients by how long they waited: from the campaign's first attempt to " +
                     "their final attempt (" + qs.final + " final), or to now while waiting (" +
                     qs.waiting + " waiting). Import times are not recorded.");
    barChart(s7, "chart-queue-age", "recipients by wait", qa.map(function (r) { return r.waited; }),
             [{label: "final", color: "#2e8b57", values: qa.map(function (r) { return r.final; })},
              {label: "waiting", color: "#e08a00", values: qa.map(function (r) { return r.waiting; })}]);
  }

  document.body.setAttribute("data-charts", String(charts.length));
})();
