import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { describeError } from './api';
import { onLinkClick } from './router';

export function Link(props: { href: string; children: ComponentChildren; current?: boolean }) {
  return (
    <a href={props.href} onClick={onLinkClick} aria-current={props.current ? 'page' : undefined}>
      {props.children}
    </a>
  );
}

/** A page's heading, focused on arrival so that keyboard and screen-reader users start there. */
export function PageTitle(props: { children: ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => ref.current?.focus(), []);
  return (
    <h1 tabIndex={-1} ref={ref}>
      {props.children}
    </h1>
  );
}

/** A form's error, announced when it appears. */
export function ErrorMessage(props: { id: string; message: string | undefined }) {
  return (
    <p id={props.id} class="error" role="alert" hidden={!props.message}>
      {props.message}
    </p>
  );
}

/**
 * A block of text to paste somewhere, with a copy button. Where the clipboard is not available, the
 * text is selected instead (Ctrl+C copies it).
 */
export function CopyBlock(props: { id: string; label: string; text: string }) {
  const [status, setStatus] = useState('');
  const ref = useRef<HTMLPreElement>(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(props.text);
      setStatus('Copied.');
    } catch {
      const range = document.createRange();
      if (ref.current) range.selectNodeContents(ref.current);
      const selection = getSelection();
      selection?.removeAllRanges();
      selection?.addRange(range);
      setStatus('Selected: press Ctrl+C to copy.');
    }
  };
  return (
    <div class="copy-block">
      <div class="copy-head">
        <span id={`${props.id}-label`}>{props.label}</span>
        <button type="button" onClick={copy} aria-describedby={`${props.id}-label`} data-copy={props.id}>
          Copy
        </button>
        <span class="copy-status" role="status">
          {status}
        </span>
      </div>
      <pre id={props.id} ref={ref} aria-labelledby={`${props.id}-label`} tabIndex={0}>
        <code>{props.text}</code>
      </pre>
    </div>
  );
}

/**
 * A form's submission (or any action): busy while it runs, its failure kept as `describe` makes it
 * (the message by default), cleared when it starts again.
 */
export function useSubmit<E = string>(describe: (error: unknown) => E = describeError as (error: unknown) => E) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<E>();
  const run = async (action: () => Promise<void>): Promise<boolean> => {
    setBusy(true);
    setError(undefined);
    try {
      await action();
      return true;
    } catch (e) {
      setError(describe(e));
      return false;
    } finally {
      setBusy(false);
    }
  };
  /** An onSubmit handler: the action gets the form (its fields, reset). */
  const submit = (action: (form: HTMLFormElement) => Promise<void>) => (event: Event) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    void run(() => action(form));
  };
  return { busy, error, setError, run, submit };
}

export interface Column<T> {
  head: ComponentChildren;
  cell: (row: T) => ComponentChildren;
  /** The row's name for screen readers (a <th scope="row">). */
  rowHeader?: boolean;
  class?: (row: T) => string | undefined;
}

/** A table of rows with a caption, or its empty state; nothing while the rows are not loaded. */
export function DataTable<T>(props: {
  caption: string;
  class?: string;
  columns: Array<Column<T>>;
  rows: T[] | undefined;
  empty: ComponentChildren;
  rowKey: (row: T) => string;
  rowAttributes?: (row: T) => Record<string, string | undefined>;
}) {
  if (!props.rows) return null;
  if (props.rows.length === 0) return <p class="empty">{props.empty}</p>;
  return (
    <table class={`keys${props.class ? ` ${props.class}` : ''}`}>
      <caption class="visually-hidden">{props.caption}</caption>
      <thead>
        <tr>
          {props.columns.map((column, i) => (
            <th scope="col" key={i}>
              {column.head}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {props.rows.map((row) => (
          <tr key={props.rowKey(row)} {...(props.rowAttributes?.(row) ?? {})}>
            {props.columns.map((column, i) =>
              column.rowHeader ? (
                <th scope="row" key={i} class={column.class?.(row)}>
                  {column.cell(row)}
                </th>
              ) : (
                <td key={i} class={column.class?.(row)}>
                  {column.cell(row)}
                </td>
              ),
            )}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** A column head only screen readers read (an actions column). */
export const HiddenHead = (props: { children: ComponentChildren }) => <span class="visually-hidden">{props.children}</span>;
