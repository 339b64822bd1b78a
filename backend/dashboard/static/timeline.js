// The timeline: one bar per activity, timer and child workflow on a time axis, coloured by the
// app that ran it. Drawn on a canvas, only the rows in view (a 5,000-event history is a few
// thousand rows: drawing them all on every scroll would freeze the page).
import { h, duration, when, appColors, instanceHref } from "./util.js";

const ROW = 20;
const LABEL = 240;
const AXIS = 24;
const FAILED = "#c62828";
const VIEW = 480;

export class Timeline {
  constructor(data, { onOpenChild } = {}) {
    this.data = data;
    this.colors = appColors(data.apps);
    this.onOpenChild = onOpenChild;
    this.scroll = h("div", { class: "timeline-scroll", "data-testid": "timeline" });
    this.canvas = h("canvas", { "data-bars": String(data.bars.length) });
    this.spacer = h("div");
    this.scroll.append(this.canvas, this.spacer);
    this.tooltip = document.getElementById("tooltip");
    this.frame = 0;
    this.scroll.addEventListener("scroll", () => this.schedule());
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tooltip.hidden = true; });
    this.canvas.addEventListener("click", (e) => this.click(e));
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.scroll);
  }

  element() {
    const legend = h("div", { class: "legend", "data-testid": "legend" },
      ...this.data.apps.map((app) => h("span", { "data-app": app, "data-color": this.colors[app] },
        h("span", { class: "swatch", style: `background:${this.colors[app]}` }), app)),
      h("span", { class: "muted" }, "| failed: red edge and x | retry: #n | timer: thin bar | child: outlined"));
    const total = AXIS + this.data.bars.length * ROW;
    this.spacer.style.height = `${Math.max(0, total - Math.min(total, VIEW))}px`;
    return h("div", {}, legend, this.scroll);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  // Geometry of the axis: time -> x.
  span() {
    const start = this.data.start;
    const end = Math.max(this.data.end, start + 1);
    const width = this.canvas.width / (window.devicePixelRatio || 1) - LABEL - 12;
    return { start, end, width: Math.max(50, width) };
  }

  x(t) {
    const { start, end, width } = this.span();
    return LABEL + ((t - start) / (end - start)) * width;
  }

  barBox(i) {
    const bar = this.data.bars[i];
    const top = AXIS + i * ROW - this.scroll.scrollTop;
    const startX = this.x(bar.start ?? this.data.start);
    const endT = bar.end ?? (bar.kind === "timer" && bar.fireAt ? bar.fireAt : this.data.now);
    const endX = Math.max(startX + 3, this.x(Math.min(endT, this.data.end)));
    const thin = bar.kind === "timer";
    return { x: startX, y: top + (thin ? 7 : 3), w: endX - startX, h: thin ? 6 : ROW - 6 };
  }

  draw() {
    const dpr = window.devicePixelRatio || 1;
    const width = this.scroll.clientWidth;
    // The view's height comes from the data (at most VIEW px, the container's max-height), never
    // from the container's current height: that follows the canvas, so it would stay at its first size.
    const height = Math.min(VIEW, AXIS + this.data.bars.length * ROW);
    if (this.canvas.width !== Math.round(width * dpr) || this.canvas.height !== Math.round(height * dpr)) {
      this.canvas.width = Math.round(width * dpr);
      this.canvas.height = Math.round(height * dpr);
      this.canvas.style.width = `${width}px`;
      this.canvas.style.height = `${height}px`;
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px system-ui, 'DejaVu Sans', sans-serif";
    const first = Math.max(0, Math.floor(this.scroll.scrollTop / ROW));
    const last = Math.min(this.data.bars.length, first + Math.ceil(height / ROW) + 1);
    for (let i = first; i < last; i++) this.drawBar(ctx, i);
    this.drawAxis(ctx, width);
    this.drawn = { first, last };
    this.canvas.dataset.drawn = String(last - first);
  }

  drawAxis(ctx, width) {
    const { start, end } = this.span();
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, width, AXIS);
    ctx.strokeStyle = "#dde1e8";
    ctx.beginPath(); ctx.moveTo(0, AXIS - 0.5); ctx.lineTo(width, AXIS - 0.5); ctx.stroke();
    ctx.fillStyle = "#667085";
    const ticks = 6;
    for (let k = 0; k <= ticks; k++) {
      const t = start + ((end - start) * k) / ticks;
      const x = this.x(t);
      ctx.fillRect(x, AXIS - 6, 1, 6);
      const label = k === 0 ? when(start).slice(11) : `+${duration(t - start)}`;
      ctx.fillText(label, Math.min(x + 2, width - 70), 14);
    }
  }

  drawBar(ctx, i) {
    const bar = this.data.bars[i];
    const top = AXIS + i * ROW - this.scroll.scrollTop;
    if (i % 2) { ctx.fillStyle = "#fafbfc"; ctx.fillRect(0, top, this.canvas.width, ROW); }
    ctx.fillStyle = "#1d2330";
    const label = `${bar.kind === "activity" ? "" : bar.kind + " "}${bar.name}${bar.attempt > 1 ? ` #${bar.attempt}` : ""}`;
    ctx.fillText(label.length > 34 ? label.slice(0, 33) + "…" : label, 6, top + 14);
    const box = this.barBox(i);
    ctx.globalAlpha = bar.outcome === "running" || bar.outcome === "waiting" ? 0.55 : 1;
    ctx.fillStyle = this.colors[bar.app] || "#999";
    ctx.fillRect(box.x, box.y, box.w, box.h);
    ctx.globalAlpha = 1;
    if (bar.kind === "child") {
      ctx.strokeStyle = "#1d2330"; ctx.lineWidth = 1.5;
      ctx.strokeRect(box.x + 0.75, box.y + 0.75, box.w - 1.5, box.h - 1.5);
    }
    if (bar.outcome === "failed") {
      ctx.fillStyle = FAILED;
      ctx.fillRect(box.x + box.w - 3, box.y - 1, 3, box.h + 2);
      const cx = box.x + box.w + 8, cy = box.y + box.h / 2;
      ctx.strokeStyle = FAILED; ctx.lineWidth = 2; ctx.beginPath();
      ctx.moveTo(cx - 4, cy - 4); ctx.lineTo(cx + 4, cy + 4); ctx.moveTo(cx + 4, cy - 4); ctx.lineTo(cx - 4, cy + 4);
      ctx.stroke();
    }
    if (bar.attempt > 1 || bar.retryOf) {
      ctx.fillStyle = "#1d2330";
      ctx.fillText(bar.retryOf ? "retry wait" : `#${bar.attempt}`, box.x + box.w + (bar.outcome === "failed" ? 16 : 4), top + 14);
    }
  }

  at(event) {
    const rect = this.canvas.getBoundingClientRect();
    const y = event.clientY - rect.top;
    if (y < AXIS) return -1;
    const i = Math.floor((y - AXIS + this.scroll.scrollTop) / ROW);
    return i >= 0 && i < this.data.bars.length ? i : -1;
  }

  hover(event) {
    const i = this.at(event);
    if (i < 0) { this.tooltip.hidden = true; return; }
    const b = this.data.bars[i];
    const end = b.end ?? null;
    const lines = [
      `${b.kind} ${b.name}`, `app: ${b.app}`, b.route ? `route: ${b.route}` : null,
      `outcome: ${b.outcome}${b.attempt > 1 ? ` (attempt ${b.attempt})` : ""}`,
      `start: ${when(b.start)}`, end ? `end: ${when(end)} (${duration(end - b.start)})` : "still open",
      b.fireAt ? `fires at: ${when(b.fireAt)}` : null, b.retryOf ? `back-off before a ${b.retryOf} retry` : null,
      b.error ? `error: ${b.error.errorType}: ${b.error.errorMessage}` : null,
      b.child ? `child: ${b.child.app}/${b.child.id} (click to open)` : null,
    ].filter(Boolean);
    this.tooltip.textContent = lines.join("\n");
    this.tooltip.style.left = `${event.clientX + 12}px`;
    this.tooltip.style.top = `${event.clientY + 12}px`;
    this.tooltip.hidden = false;
  }

  click(event) {
    const i = this.at(event);
    if (i < 0) return;
    const b = this.data.bars[i];
    if (b.child) location.hash = instanceHref(b.child.app, b.child.id);
  }

  destroy() { this.resize.disconnect(); this.tooltip.hidden = true; }
}
