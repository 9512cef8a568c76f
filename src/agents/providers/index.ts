// The adapter for an agent's AI settings: Anthropic's own API, or Chat Completions for the rest.
import { AnthropicProvider } from './anthropic.js';
import { OpenAIProvider } from './openai.js';
import { providerBaseUrl } from '../../core/agent-ai.js';
import type { ModelProvider, ProviderSettings } from './provider.js';

export function modelProvider(settings: ProviderSettings): ModelProvider {
  const baseUrl = settings.baseUrl ?? providerBaseUrl(settings.provider);
  if (settings.provider === 'anthropic') return new AnthropicProvider({ ...settings, baseUrl });
  return new OpenAIProvider({ ...settings, baseUrl });
}

export * from './provider.js';
