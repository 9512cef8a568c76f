// OpenAI Chat Completions through the official SDK, and every OpenAI-compatible service
// (OpenRouter, Ollama, Groq, ...) through its base URL: one non-streaming call per turn.
import OpenAI from 'openai';
import {
  readToolCall,
  usageOf,
  guardedTurn,
  type ChatMessage,
  type ModelProvider,
  type ProviderSettings,
  type ToolCall,
  type TurnRequest,
  type TurnResult,
} from './provider.js';

type WireMessage = Record<string, unknown>;

/** Our messages in Chat Completions' shape: one `tool` message per result, under its call's id. */
export function openaiMessages(system: string | undefined, messages: ChatMessage[]): WireMessage[] {
  const out: WireMessage[] = system ? [{ role: 'system', content: system }] : [];
  for (const m of messages) {
    if (m.role === 'user') out.push({ role: 'user', content: m.content });
    else if (m.role === 'assistant')
      out.push({
        role: 'assistant',
        content: m.content || null,
        ...(m.toolCalls?.length
          ? {
              tool_calls: m.toolCalls.map((c) => ({
                id: c.id,
                type: 'function',
                function: { name: c.name, arguments: JSON.stringify(c.arguments) },
              })),
            }
          : {}),
      });
    else for (const r of m.results) out.push({ role: 'tool', tool_call_id: r.callId, content: r.content });
  }
  return out;
}

export class OpenAIProvider implements ModelProvider {
  readonly provider: string;
  readonly model: string;
  private readonly client: OpenAI;

  constructor(settings: ProviderSettings) {
    this.provider = settings.provider;
    this.model = settings.model;
    // No retries: the run's deadline rules, and the loop decides what a refusal means. No SDK
    // logging, and nothing from the server's environment (OPENAI_ORG_ID, ...) sent to the agent's service.
    this.client = new OpenAI({
      apiKey: settings.apiKey,
      baseURL: settings.baseUrl ?? null,
      organization: null,
      project: null,
      maxRetries: 0,
      logLevel: 'off',
      ...(settings.fetch ? { fetch: settings.fetch } : {}),
    });
  }

  async turn(request: TurnRequest): Promise<TurnResult> {
    return guardedTurn(request, this.provider, async (signal, left) => {
      const answer = await this.client.chat.completions.create(
        {
          model: this.model,
          // OpenAI's own name; compatible services (Ollama, Groq, OpenRouter) all read the older one.
          ...(this.provider === 'openai' ? { max_completion_tokens: request.maxOutputTokens } : { max_tokens: request.maxOutputTokens }),
          messages: openaiMessages(request.system, request.messages) as never,
          ...(request.tools.length
            ? {
                tools: request.tools.map((t) => ({
                  type: 'function' as const,
                  function: { name: t.name, description: t.description, parameters: t.inputSchema },
                })),
              }
            : {}),
        },
        { signal, timeout: left, maxRetries: 0 },
      );
      const choice = answer?.choices?.[0];
      if (!choice?.message) throw new Error('no choice');
      const toolCalls: ToolCall[] = [];
      for (const call of choice.message.tool_calls ?? []) {
        if (call.type !== 'function' || typeof call.id !== 'string') continue;
        toolCalls.push(readToolCall(call.id, call.function?.name, call.function?.arguments));
      }
      const stop = String(choice.finish_reason ?? '');
      return {
        text: typeof choice.message.content === 'string' ? choice.message.content : '',
        toolCalls,
        usage: usageOf(answer.usage?.prompt_tokens, answer.usage?.completion_tokens),
        stopReason: stop === 'stop' ? 'end' : stop === 'length' ? 'max_tokens' : stop,
      };
    });
  }
}
