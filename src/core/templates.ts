import type { Language } from './functions.js';

/** A starter function; make_function(template=...) clones its code, schemas, tags and requirements. */
export interface FunctionTemplate {
  name: string;
  description: string;
  language: Language;
  code: string;
  inputSchema: Record<string, unknown>;
  outputSchema: Record<string, unknown>;
  tags: string[];
  requirements: string[];
}

const HELLO_WORLD = `def main(input_data):
    name = input_data.get("name") or "World"
    return {
        "greeting": f"Hello, {name}!",
        "message": "MCPWorks is up: this function ran in a sandbox.",
    }
`;

const CSV_ANALYZER = `import csv
import io
import statistics


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def main(input_data):
    text = (input_data.get("csv_data") or "").strip()
    if not text:
        return {"error": "csv_data is empty"}
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return {"error": "csv_data has a header but no rows"}
    columns = list(rows[0].keys())
    stats = {}
    for column in columns:
        values = [row.get(column) for row in rows if row.get(column) not in (None, "")]
        numbers = [_number(v) for v in values]
        if values and all(n is not None for n in numbers):
            stats[column] = {
                "type": "numeric",
                "min": min(numbers),
                "max": max(numbers),
                "mean": statistics.fmean(numbers),
                "median": statistics.median(numbers),
            }
        else:
            unique = list(dict.fromkeys(values))
            stats[column] = {"type": "text", "unique_count": len(unique), "sample_values": unique[:5]}
    return {"row_count": len(rows), "columns": columns, "stats": stats}
`;

const API_CONNECTOR = `import httpx


def main(input_data):
    url = input_data["url"]
    method = (input_data.get("method") or "GET").upper()
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        raise ValueError(f"unsupported method {method}")
    body = input_data.get("body")
    kwargs = {"headers": input_data.get("headers") or {}}
    if body is not None:
        if isinstance(body, (dict, list)):
            kwargs["json"] = body
        else:
            kwargs["content"] = str(body)
    response = httpx.request(method, url, timeout=15.0, follow_redirects=True, **kwargs)
    return {
        "status_code": response.status_code,
        "headers": dict(response.headers),
        "body": response.text[:10000],
        "ok": response.is_success,
    }
`;

const SLACK_NOTIFIER = `import httpx


def main(input_data):
    payload = {"text": input_data["text"]}
    if input_data.get("channel"):
        payload["channel"] = input_data["channel"]
    response = httpx.post(input_data["webhook_url"], json=payload, timeout=15.0)
    return {
        "sent": response.is_success,
        "status_code": response.status_code,
        "response": response.text[:500],
    }
`;

const SCHEDULED_REPORT = `import json
from datetime import datetime, timezone


def main(input_data):
    title = input_data.get("title") or "Report"
    sections = input_data.get("sections") or []
    fmt = input_data.get("format") or "markdown"
    generated_at = datetime.now(timezone.utc).isoformat()
    if fmt == "json":
        report = json.dumps({"title": title, "generated_at": generated_at, "sections": sections}, indent=2)
    else:
        lines = [f"# {title}", "", f"_Generated {generated_at}_", ""]
        for section in sections:
            lines += [f"## {section.get('heading', '')}", "", str(section.get("content", "")), ""]
        report = "\\n".join(lines).rstrip() + "\\n"
    return {"report": report, "format": fmt, "generated_at": generated_at}
`;

export const TEMPLATES: readonly FunctionTemplate[] = Object.freeze([
  {
    name: 'hello-world',
    description: 'Greet by name, prove the system works.',
    language: 'python',
    code: HELLO_WORLD,
    inputSchema: { type: 'object', properties: { name: { type: 'string', description: 'Who to greet (default "World")' } } },
    outputSchema: {
      type: 'object',
      properties: { greeting: { type: 'string' }, message: { type: 'string' } },
      required: ['greeting', 'message'],
    },
    tags: ['starter', 'example'],
    requirements: [],
  },
  {
    name: 'csv-analyzer',
    description: 'Parse CSV text and return summary statistics per column (numeric: min/max/mean/median; text: unique count and samples).',
    language: 'python',
    code: CSV_ANALYZER,
    inputSchema: {
      type: 'object',
      properties: { csv_data: { type: 'string', description: 'CSV text with a header row' } },
      required: ['csv_data'],
    },
    outputSchema: {
      type: 'object',
      properties: {
        row_count: { type: 'integer' },
        columns: { type: 'array', items: { type: 'string' } },
        stats: { type: 'object' },
        error: { type: 'string' },
      },
    },
    tags: ['data', 'csv'],
    requirements: [],
  },
  {
    name: 'api-connector',
    description:
      'Call an external HTTP API and return the response (status, headers, body up to 10,000 characters). Needs sandbox network egress.',
    language: 'python',
    code: API_CONNECTOR,
    inputSchema: {
      type: 'object',
      properties: {
        url: { type: 'string', description: 'Absolute http(s) URL' },
        method: { type: 'string', enum: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], default: 'GET' },
        headers: { type: 'object', additionalProperties: { type: 'string' } },
        body: { description: 'JSON body (object/array) or raw text' },
      },
      required: ['url'],
    },
    outputSchema: {
      type: 'object',
      properties: { status_code: { type: 'integer' }, headers: { type: 'object' }, body: { type: 'string' }, ok: { type: 'boolean' } },
      required: ['status_code', 'headers', 'body', 'ok'],
    },
    tags: ['http', 'integration'],
    requirements: ['httpx'],
  },
  {
    name: 'slack-notifier',
    description: 'Post a message to a Slack incoming webhook. Needs sandbox network egress.',
    language: 'python',
    code: SLACK_NOTIFIER,
    inputSchema: {
      type: 'object',
      properties: {
        webhook_url: { type: 'string', description: 'Slack incoming-webhook URL' },
        text: { type: 'string' },
        channel: { type: 'string' },
      },
      required: ['webhook_url', 'text'],
    },
    outputSchema: {
      type: 'object',
      properties: { sent: { type: 'boolean' }, status_code: { type: 'integer' }, response: { type: 'string' } },
      required: ['sent', 'status_code', 'response'],
    },
    tags: ['notification', 'slack'],
    requirements: ['httpx'],
  },
  {
    name: 'scheduled-report',
    description: 'Build a Markdown or JSON report from titled sections, stamped with the generation time.',
    language: 'python',
    code: SCHEDULED_REPORT,
    inputSchema: {
      type: 'object',
      properties: {
        title: { type: 'string' },
        sections: {
          type: 'array',
          items: {
            type: 'object',
            properties: { heading: { type: 'string' }, content: { type: 'string' } },
            required: ['heading', 'content'],
          },
        },
        format: { type: 'string', enum: ['markdown', 'json'], default: 'markdown' },
      },
      required: ['title', 'sections'],
    },
    outputSchema: {
      type: 'object',
      properties: { report: { type: 'string' }, format: { type: 'string' }, generated_at: { type: 'string' } },
      required: ['report', 'format', 'generated_at'],
    },
    tags: ['report', 'scheduled'],
    requirements: [],
  },
]);

export function findTemplate(name: string): FunctionTemplate | undefined {
  return TEMPLATES.find((t) => t.name === name);
}
