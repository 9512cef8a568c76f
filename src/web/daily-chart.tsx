import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface DayCount {
  day: string;
  executions: number;
}

/** The stylesheet's colour for a custom property: a canvas takes colours, not `var(--x)`. */
const cssColor = (name: string, fallback: string) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;

const HEIGHT = 220;
const MAX_WIDTH = 720;
/** Tick steps of whole executions (1, 2, 5, 10, 20, …): a count has no fractions. */
const WHOLE_STEPS = Array.from({ length: 30 }, (_, i) => [1, 2, 5][i % 3]! * 10 ** Math.floor(i / 3));

/**
 * The Usage page's per-day bar chart (`days`: day 1 to today of `month`, YYYY-MM), drawn by uPlot
 * on a canvas (about 52 KB of the bundle). uPlot sets styles through CSSOM only, which the CSP
 * (style-src 'self') allows; the SVG libraries (Chartist, frappe-charts) write `style` attributes,
 * which it blocks. A canvas says nothing to a screen reader, so the container is one labelled image
 * and the page keeps a table of the same numbers beside it (the keyboard and screen-reader route).
 */
export function DailyChart(props: { month: string; days: DayCount[] }) {
  const holder = useRef<HTMLDivElement>(null);
  const max = Math.max(0, ...props.days.map((d) => d.executions));
  useEffect(() => {
    const element = holder.current;
    if (!element) return;
    const width = () => Math.min(MAX_WIDTH, element.clientWidth || MAX_WIDTH);
    const muted = cssColor('--muted', '#57606a');
    const grid = { stroke: cssColor('--line', '#d0d7de'), width: 1 };
    // The whole month on the x axis (the days so far have bars), so the layout holds all month.
    const [year, month] = props.month.split('-').map(Number) as [number, number];
    const monthLength = new Date(Date.UTC(year, month, 0)).getUTCDate();
    const chart = new uPlot(
      {
        width: width(),
        height: HEIGHT,
        // Hovering a day shows its count in the legend; no drag-to-zoom on a month of bars.
        cursor: { drag: { x: false, y: false }, points: { show: false } },
        legend: { show: true, live: true },
        scales: {
          // Day numbers, not times; half a day of room each side so the edge bars are whole.
          x: { time: false, range: () => [0.5, monthLength + 0.5] },
          y: { range: (_u, _min, top) => [0, Math.max(1, top)] },
        },
        axes: [
          {
            stroke: muted,
            grid: { show: false },
            ticks: { stroke: grid.stroke },
            // Day 1 and every fifth: fixed, so they fit a narrow window as well as a wide one.
            splits: () => [1, 5, 10, 15, 20, 25, 30].filter((day) => day <= monthLength),
            values: (_u, splits) => splits.map(String),
          },
          {
            stroke: muted,
            grid,
            ticks: { stroke: grid.stroke },
            incrs: WHOLE_STEPS,
          },
        ],
        series: [
          { label: 'Day', value: (_u, v) => (v === null ? '–' : `${props.days[v - 1]?.day ?? v}`) },
          {
            label: 'Executions',
            value: (_u, v) => (v === null ? '–' : v.toLocaleString()),
            fill: cssColor('--accent', '#0b5cad'),
            stroke: cssColor('--accent', '#0b5cad'),
            width: 0,
            points: { show: false },
            paths: uPlot.paths.bars!({ size: [0.7, 24], align: 0 }),
          },
        ],
      },
      [props.days.map((_, i) => i + 1), props.days.map((d) => d.executions)],
      element,
    );
    // The page's width changes with the window: the canvas follows it.
    const observer = new ResizeObserver(() => {
      if (chart.width !== width()) chart.setSize({ width: width(), height: HEIGHT });
    });
    observer.observe(element);
    return () => {
      observer.disconnect();
      chart.destroy();
    };
  }, [props.month, props.days]);
  return (
    <div
      ref={holder}
      class="chart"
      role="img"
      aria-label={`Executions per day this month, as bars (highest: ${max}); the numbers are in the table below`}
    />
  );
}
