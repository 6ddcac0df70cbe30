// Reporting dashboard: reads the KPI API and draws progress to 100% and trends (Chart.js).
// Filters in the page's query string (facility, method, brand, procedure, from, to) are passed
// on to the API. When everything is drawn, window.dashboard.ready is true (the browser test
// waits for it).
"use strict";

const PAYMENT_FILTERS = ["facility", "method", "brand", "from", "to"];
const USAGE_FILTERS = ["procedure", "department", "group", "from", "to"];
const TOP_PROCEDURES = 15;
const COVERAGE_FILTERS = ["department", "group", "from", "to"];
const COLORS = { online: "#1f883d", counter: "#bf8700", mail: "#8250df", cash: "#6e7781",
  share: "#0969da", amount: "#cf222e" };

window.dashboard = { ready: false, charts: {}, data: {} };

function query(names) {
  const page = new URLSearchParams(window.location.search);
  const out = new URLSearchParams();
  for (const name of names) {
    if (page.get(name)) out.set(name, page.get(name));
  }
  const text = out.toString();
  return text ? `?${text}` : "";
}

async function getJson(path) {
  const resp = await fetch(path, { headers: { accept: "application/json" } });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

function percent(share) {
  return share === null ? "–" : `${(share * 100).toFixed(2)}%`;
}

function showProgress(id, share, detail) {
  const box = document.getElementById(id);
  box.querySelector(".fill").style.width = share === null ? "0" : `${share * 100}%`;
  box.querySelector(".value").textContent = percent(share);
  box.querySelector(".value").dataset.share = share === null ? "" : String(share);
  box.querySelector(".detail").textContent = detail;
}

function draw(id, config) {
  config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: true },
    config.options || {});
  window.dashboard.charts[id] = new Chart(document.getElementById(id), config);
}

const shareAxis = { min: 0, max: 1, ticks: { callback: (v) => `${Math.round(v * 100)}%` } };

function drawCoverage(coverage, usage) {
  const t = coverage.total;
  showProgress("kpi-coverage", t.coverage_share,
    `${t.online} / ${t.procedures} procedures online`);
  draw("chart-coverage-by-month", {
    type: "line",
    data: {
      labels: coverage.by_month.map((m) => m.month),
      datasets: [
        { label: "actual", data: coverage.by_month.map((m) => m.coverage_share), borderColor: COLORS.online },
        { label: "planned", data: coverage.by_month.map((m) => m.planned_share), borderColor: COLORS.share,
          borderDash: [6, 4] },
      ],
    },
    options: { scales: { y: shareAxis } },
  });
  // Departments of the catalog, with the online usage of their applications beside.
  const usageBy = new Map(usage.by_department.map((d) => [d.department, d.online_share]));
  draw("chart-by-department", {
    type: "bar",
    data: {
      labels: coverage.by_department.map((d) => d.department),
      datasets: [
        { label: "coverage", data: coverage.by_department.map((d) => d.coverage_share), backgroundColor: COLORS.online },
        { label: "online usage", data: coverage.by_department.map((d) => usageBy.get(d.department) ?? null),
          backgroundColor: COLORS.share },
      ],
    },
    options: { scales: { y: shareAxis } },
  });
}

function drawUsage(usage) {
  const t = usage.total;
  showProgress("kpi-online-usage", t.online_share,
    `${t.online} / ${t.total} applications online`);
  draw("chart-usage-by-month", {
    type: "bar",
    data: {
      labels: usage.by_month.map((m) => m.month),
      datasets: [
        { label: "online", data: usage.by_month.map((m) => m.online), backgroundColor: COLORS.online, stack: "n" },
        { label: "counter", data: usage.by_month.map((m) => m.counter), backgroundColor: COLORS.counter, stack: "n" },
        { label: "mail", data: usage.by_month.map((m) => m.mail), backgroundColor: COLORS.mail, stack: "n" },
        { label: "online share", type: "line", data: usage.by_month.map((m) => m.online_share),
          borderColor: COLORS.share, yAxisID: "share" },
      ],
    },
    options: { scales: { y: { stacked: true, beginAtZero: true }, share: { ...shareAxis, position: "right" } } },
  });
  // The procedures with the most applications (the leading projects' candidates).
  const top = [...usage.by_procedure]
    .sort((a, b) => b.total - a.total || (a.procedure_code < b.procedure_code ? -1 : 1))
    .slice(0, TOP_PROCEDURES);
  draw("chart-usage-by-procedure", {
    type: "bar",
    data: {
      labels: top.map((p) => p.procedure_code),
      datasets: [{ label: "online share", data: top.map((p) => p.online_share),
        backgroundColor: COLORS.share }],
    },
    options: { indexAxis: "y", scales: { x: shareAxis } },
  });
}

function drawCashless(pay) {
  const t = pay.total;
  showProgress("kpi-cashless-count", t.cashless_share_by_count,
    `${t.cashless_count} / ${t.count} payments cashless`);
  showProgress("kpi-cashless-amount", t.cashless_share_by_amount,
    `¥${t.cashless_amount_yen.toLocaleString("ja-JP")} / ¥${t.amount_yen.toLocaleString("ja-JP")}`);
  draw("chart-cashless-by-facility", {
    type: "bar",
    data: {
      labels: pay.by_facility.map((f) => f.facility_code),
      datasets: [
        { label: "by count", data: pay.by_facility.map((f) => f.cashless_share_by_count), backgroundColor: COLORS.share },
        { label: "by amount", data: pay.by_facility.map((f) => f.cashless_share_by_amount), backgroundColor: COLORS.amount },
      ],
    },
    options: { scales: { y: shareAxis } },
  });
  draw("chart-cashless-by-month", {
    type: "line",
    data: {
      labels: pay.by_month.map((m) => m.month),
      datasets: [
        { label: "by count", data: pay.by_month.map((m) => m.cashless_share_by_count), borderColor: COLORS.share },
        { label: "by amount", data: pay.by_month.map((m) => m.cashless_share_by_amount), borderColor: COLORS.amount },
      ],
    },
    options: { scales: { y: shareAxis } },
  });
  draw("chart-payments-by-method", {
    type: "bar",
    data: {
      labels: pay.by_method.map((m) => (m.brand ? `${m.method} · ${m.brand}` : m.method)),
      datasets: [{ label: "payments", data: pay.by_method.map((m) => m.count),
        backgroundColor: pay.by_method.map((m) => (m.method === "cash" ? COLORS.cash : COLORS.share)) }],
    },
    options: { scales: { y: { beginAtZero: true } } },
  });
}

async function main() {
  const filters = new URLSearchParams(window.location.search).toString();
  document.getElementById("filters").textContent = filters ? `filters: ${filters}` : "all facilities, all months";
  const [coverage, usage, pay] = await Promise.all([
    getJson(`kpi/online-coverage${query(COVERAGE_FILTERS)}`),
    getJson(`kpi/online-usage${query(USAGE_FILTERS)}`),
    getJson(`kpi/cashless-share${query(PAYMENT_FILTERS)}`),
  ]);
  window.dashboard.data = { coverage, usage, pay };
  drawCoverage(coverage, usage);
  drawUsage(usage);
  drawCashless(pay);
  window.dashboard.ready = true;
}

main().catch((err) => {
  console.error(err);
  document.getElementById("filters").textContent = `could not load the figures: ${err.message}`;
  window.dashboard.error = String(err);
});
