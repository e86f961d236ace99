// Messages-per-second sparklines drawn as SVG (an area and a line), scaled to
// the window's peak, with the newest sample on the right.

const SVG = "http://www.w3.org/2000/svg";
export const WINDOW = 60; // samples kept per series (one per poll)

/** A fixed-length series of rates; push() drops the oldest beyond WINDOW. */
export class Series {
  constructor() {
    this.values = [];
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > WINDOW) this.values.shift();
  }

  get last() {
    return this.values.length ? this.values[this.values.length - 1] : 0;
  }

  get peak() {
    return this.values.reduce((a, b) => Math.max(a, b), 0);
  }
}

/** Redraw ``svg`` (any viewBox) from ``values``; ``label`` becomes its tooltip. */
export function drawSparkline(svg, values, label) {
  const box = svg.viewBox.baseVal;
  const width = box && box.width ? box.width : 120;
  const height = box && box.height ? box.height : 28;
  const peak = Math.max(1, ...values);
  const step = width / (WINDOW - 1);
  const offset = WINDOW - values.length; // right-align a series still filling up
  const points = values.map((v, i) => {
    const x = (offset + i) * step;
    const y = height - 1.5 - (v / peak) * (height - 3);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });

  svg.replaceChildren();
  const title = document.createElementNS(SVG, "title");
  title.textContent = label;
  svg.append(title);
  const base = document.createElementNS(SVG, "line");
  base.setAttribute("class", "spark-base");
  for (const [k, v] of Object.entries({ x1: 0, x2: width, y1: height - 0.75, y2: height - 0.75 })) base.setAttribute(k, v);
  svg.append(base);
  if (points.length < 2) return;

  const first = points[0].split(",")[0];
  const last = points[points.length - 1].split(",")[0];
  const area = document.createElementNS(SVG, "polygon");
  area.setAttribute("class", "spark-area");
  area.setAttribute("points", `${first},${height} ${points.join(" ")} ${last},${height}`);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("class", "spark-line");
  line.setAttribute("points", points.join(" "));
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(area, line);
}
