import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
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
