import { useEffect, useState } from 'preact/hooks';
import { api, describeError } from '../api';
import { ErrorMessage, PageTitle } from '../components';

interface MonthUsage {
  usage: {
    tier: string;
    month: string;
    executions: number;
    limit: number | null;
    remaining: number | null;
    resets_at: string;
    executions_per_minute: { used: number; limit: number | null };
    concurrency: { active: number; limit: number | null };
  };
  days: Array<{ day: string; executions: number }>;
  limits: { monthly_executions: number | null; executions_per_minute: number | null; concurrency: number | null; agents: number | null };
}

const limitText = (n: number | null) => (n === null ? 'unlimited' : n.toLocaleString());

/** Every day of the month so far, with its count (days without executions are 0). */
function monthDays(month: string, days: MonthUsage['days']): Array<{ day: string; executions: number }> {
  const counts = new Map(days.map((d) => [d.day, d.executions]));
  const [year, mon] = month.split('-').map(Number) as [number, number];
  const today = new Date();
  const last =
    today.getUTCFullYear() === year && today.getUTCMonth() + 1 === mon ? today.getUTCDate() : new Date(Date.UTC(year, mon, 0)).getUTCDate();
  return Array.from({ length: last }, (_, i) => {
    const day = `${month}-${String(i + 1).padStart(2, '0')}`;
    return { day, executions: counts.get(day) ?? 0 };
  });
}

/**
 * The per-day chart: an SVG drawn here rather than a charting library. The libraries that fit
 * (uPlot, Chart.js) draw on a canvas, which screen readers cannot read, and would add 50-200 KB to
 * a bundle of ~75 KB for one bar chart; SVG bars need no script or inline style, so the CSP stays
 * as strict. The same numbers are in a table beside it.
 */
function DailyChart(props: { days: Array<{ day: string; executions: number }> }) {
  const width = 720;
  const height = 200;
  const pad = { left: 40, bottom: 24, top: 10 };
  const max = Math.max(1, ...props.days.map((d) => d.executions));
  const step = (width - pad.left) / Math.max(1, props.days.length);
  const y = (n: number) => pad.top + (height - pad.top - pad.bottom) * (1 - n / max);
  return (
    <svg class="chart" viewBox={`0 0 ${width} ${height}`} role="img" aria-labelledby="chart-title">
      <title id="chart-title">Executions per day this month (highest: {max})</title>
      <line x1={pad.left} y1={y(0)} x2={width} y2={y(0)} class="axis" />
      <text x={pad.left - 6} y={y(max) + 4} text-anchor="end" class="tick">
        {max}
      </text>
      <text x={pad.left - 6} y={y(0) + 4} text-anchor="end" class="tick">
        0
      </text>
      {props.days.map((d, i) => (
        <g key={d.day}>
          <rect x={pad.left + i * step + 2} y={y(d.executions)} width={Math.max(1, step - 4)} height={y(0) - y(d.executions)} class="bar">
            <title>
              {d.day}: {d.executions}
            </title>
          </rect>
          {(i === 0 || (i + 1) % 5 === 0) && (
            <text x={pad.left + i * step + step / 2} y={height - 6} text-anchor="middle" class="tick">
              {Number(d.day.slice(8))}
            </text>
          )}
        </g>
      ))}
    </svg>
  );
}

export function UsagePage() {
  const [data, setData] = useState<MonthUsage>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    api<MonthUsage>('GET', '/api/usage/month')
      .then(setData)
      .catch((e) => setError(describeError(e)));
  }, []);
  if (!data)
    return (
      <section>
        <PageTitle>Usage</PageTitle>
        <ErrorMessage id="usage-error" message={error} />
      </section>
    );
  const { usage, limits } = data;
  const days = monthDays(usage.month, data.days);
  return (
    <section>
      <PageTitle>Usage</PageTitle>
      <h2>Executions this month ({usage.month})</h2>
      <p id="usage-summary">
        {usage.executions.toLocaleString()} of {limitText(usage.limit)} executions
        {usage.remaining !== null ? ` (${usage.remaining.toLocaleString()} left)` : ''}; resets{' '}
        {new Date(usage.resets_at).toLocaleDateString()}.
      </p>
      {usage.limit !== null && (
        <progress class="quota" max={usage.limit} value={Math.min(usage.executions, usage.limit)} aria-labelledby="usage-summary" />
      )}
      <h2>Per day</h2>
      <DailyChart days={days} />
      <details>
        <summary>The numbers</summary>
        <table class="keys" aria-label="Executions per day">
          <thead>
            <tr>
              <th scope="col">Day (UTC)</th>
              <th scope="col">Executions</th>
            </tr>
          </thead>
          <tbody>
            {days.map((d) => (
              <tr key={d.day}>
                <td>{d.day}</td>
                <td>{d.executions}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
      <h2>Your plan: {usage.tier}</h2>
      <dl class="facts" id="tier-limits">
        <dt>Executions a month</dt>
        <dd>{limitText(limits.monthly_executions)}</dd>
        <dt>Executions a minute</dt>
        <dd>
          {limitText(limits.executions_per_minute)} (used in the last minute: {usage.executions_per_minute.used})
        </dd>
        <dt>Concurrent executions</dt>
        <dd>
          {limitText(limits.concurrency)} (running now: {usage.concurrency.active})
        </dd>
        <dt>Agent slots</dt>
        <dd>{limitText(limits.agents)}</dd>
      </dl>
    </section>
  );
}
