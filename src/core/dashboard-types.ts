// The JSON shapes the dashboard's routes answer, shared by the server and the browser bundle
// (src/web imports these types only: no code, no I/O).
import type { Scope } from './accounts.js';

export interface Account {
  account_id: string;
  email: string;
  tier: string;
}

export interface KeyListing {
  id: string;
  name: string;
  prefix: string;
  namespace: string | null;
  scopes: string[];
  expires_at: string | null;
  last_used_at: string | null;
  created_at: string;
}

/** A key as created: the raw key, shown once. */
export interface CreatedKey {
  id: string;
  name: string;
  prefix: string;
  key: string;
  namespace: string | null;
  scopes: Scope[];
  expires_at: string | null;
}

export interface Namespace {
  name: string;
  description: string | null;
  created_at: string;
}

/** GET /api/oauth/requests/{id}: what an MCP client's sign-in asks for (the consent page). */
export interface ConsentRequest {
  request_id: string;
  /** As the client registered itself: untrusted text, shown as text. */
  client_name: string;
  /** Where the browser goes after the decision (its host, so the owner can tell who asks). */
  redirect_host: string;
  scopes: Scope[];
  /** The namespace the client's endpoint names (fixed), or null: the owner picks one of `namespaces`. */
  namespace: string | null;
  namespaces: string[];
  expires_at: string;
}

/** GET /api/oauth/grants: the clients signed in with OAuth (the API keys page). */
export interface OAuthGrantListing {
  id: string;
  client_name: string;
  namespace: string | null;
  scopes: string[];
  created_at: string;
  last_used_at: string | null;
  expires_at: string | null;
}
