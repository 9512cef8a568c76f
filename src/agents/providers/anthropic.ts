// Anthropic Messages API through the official SDK: one non-streaming call per turn.
import Anthropic from '@anthropic-ai/sdk';
import {
  usageOf,
  readToolCall,
  guardedTurn,
  type ChatMessage,
  type ModelProvider,
  type ProviderSettings,
  type ToolCall,
  type TurnRequest,
  type TurnResult,
} from './provider.js';

type Block = Record<string, unknown>;
type WireMessage = { role: 'user' | 'assistant'; content: Block[] };

/** Our messages in Anthropic's shape: tool results are user blocks; consecutive same-role messages merge (the API wants turns to alternate). */
export function anthropicMessages(messages: ChatMessage[]): WireMessage[] {
  const out: WireMessage[] = [];
  const push = (role: 'user' | 'assistant', blocks: Block[]) => {
    const last = out[out.length - 1];
    if (last && last.role === role) last.content.push(...blocks);
    else out.push({ role, content: blocks });
  };
  for (const m of messages) {
    if (m.role === 'user') push('user', [{ type: 'text', text: m.content }]);
    else if (m.role === 'assistant') {
      const blocks: Block[] = m.content ? [{ type: 'text', text: m.content }] : [];
      for (const call of m.toolCalls ?? []) blocks.push({ type: 'tool_use', id: call.id, name: call.name, input: call.arguments });
      push('assistant', blocks);
    } else
      push(
        'user',
        m.results.map((r) => ({
          type: 'tool_result',
          tool_use_id: r.callId,
          content: r.content,
          ...(r.isError ? { is_error: true } : {}),
        })),
      );
  }
  return out;
}

export class AnthropicProvider implements ModelProvider {
  readonly provider = 'anthropic';
  readonly model: string;
  private readonly client: Anthropic;

  constructor(settings: ProviderSettings) {
    this.model = settings.model;
    // No retries: the run's deadline rules, and the loop decides what a refusal means. No SDK
    // logging (it would be the server's console), and no address from the server's environment.
    this.client = new Anthropic({
      apiKey: settings.apiKey,
      baseURL: settings.baseUrl ?? null,
      maxRetries: 0,
      logLevel: 'off',
      ...(settings.fetch ? { fetch: settings.fetch } : {}),
    });
  }

  async turn(request: TurnRequest): Promise<TurnResult> {
    return guardedTurn(request, this.provider, async (signal, left) => {
      const answer = await this.client.messages.create(
        {
          model: this.model,
          max_tokens: request.maxOutputTokens,
          ...(request.system ? { system: request.system } : {}),
          messages: anthropicMessages(request.messages) as never,
          ...(request.tools.length
            ? { tools: request.tools.map((t) => ({ name: t.name, description: t.description, input_schema: t.inputSchema as never })) }
            : {}),
        },
        { signal, timeout: left, maxRetries: 0 },
      );
      if (!answer || !Array.isArray(answer.content)) throw new Error('no content');
      let text = '';
      const toolCalls: ToolCall[] = [];
      for (const block of answer.content as unknown as Block[]) {
        if (block.type === 'text' && typeof block.text === 'string') text += block.text;
        else if (block.type === 'tool_use' && typeof block.id === 'string' && typeof block.name === 'string')
          toolCalls.push(readToolCall(block.id, block.name, block.input));
      }
      const stop = String(answer.stop_reason ?? '');
      return {
        text,
        toolCalls,
        usage: usageOf(answer.usage?.input_tokens, answer.usage?.output_tokens),
        stopReason: stop === 'tool_use' ? 'tool_calls' : stop === 'end_turn' ? 'end' : stop,
      };
    });
  }
}
