import { useEffect, useMemo, useState } from 'preact/hooks';
import { api, describeError } from '../api';
import { ErrorMessage, PageTitle } from '../components';
import { DailyChart, type DayCount } from '../daily-chart';

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
function monthDays(month: string, days: MonthUsage['days']): DayCount[] {
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

export function UsagePage() {
  const [data, setData] = useState<MonthUsage>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    api<MonthUsage>('GET', '/api/usage/month')
      .then(setData)
      .catch((e) => setError(describeError(e)));
  }, []);
  // One array per answer, so the chart is drawn once per answer, not on every render.
  const days = useMemo(() => (data ? monthDays(data.usage.month, data.days) : []), [data]);
  if (!data)
    return (
      <section>
        <PageTitle>Usage</PageTitle>
        <ErrorMessage id="usage-error" message={error} />
      </section>
    );
  const { usage, limits } = data;
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
      {/* The chart for the eye; the table under it has the same numbers for keyboards and screen readers. */}
      <DailyChart month={usage.month} days={days} />
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
