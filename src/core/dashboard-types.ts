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
