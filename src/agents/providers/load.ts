// The adapter for an agent's AI settings with only its vendor's SDK loaded, for the replica worker:
// a worker imports it at start, and both SDKs cost each replica's start ~0.4 s of CPU whether or not
// it ever calls a model (index.ts's modelProvider, for callers that hold both anyway).
import { providerBaseUrl } from '../../core/agent-ai.js';
import type { ModelProvider, ProviderSettings } from './provider.js';

export async function loadModelProvider(settings: ProviderSettings): Promise<ModelProvider> {
  const baseUrl = settings.baseUrl ?? providerBaseUrl(settings.provider);
  if (settings.provider === 'anthropic') {
    const { AnthropicProvider } = await import('./anthropic.js');
    return new AnthropicProvider({ ...settings, baseUrl });
  }
  const { OpenAIProvider } = await import('./openai.js');
  return new OpenAIProvider({ ...settings, baseUrl });
}
