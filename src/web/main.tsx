import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, type Account, type CreatedKey } from './api';
import { Link } from './components';
import { AccountPage, LoginPage, RegisterPage } from './pages/account';
import { AgentsPage } from './pages/agents';
import { ConnectPage } from './pages/connect';
import { ConsentPage } from './pages/consent';
import { ExecutionsPage } from './pages/executions';
import { FunctionsPage } from './pages/functions';
import { KeysPage } from './pages/keys';
import { UsagePage } from './pages/usage';
import { navigate, usePath } from './router';

/** The signed-in pages, in the navigation's order (the server answers each: dashboard.ts DASHBOARD_PAGES). */
const SIGNED_IN_NAV = [
  { path: '/keys', label: 'API keys' },
  { path: '/connect', label: 'Connect' },
  { path: '/functions', label: 'Functions' },
  { path: '/executions', label: 'Executions' },
  { path: '/agents', label: 'Agents' },
  { path: '/usage', label: 'Usage' },
  { path: '/account', label: 'Account' },
];
const SIGNED_OUT_NAV = [
  { path: '/login', label: 'Log in' },
  { path: '/register', label: 'Sign up' },
];
const SIGNED_IN_PAGES = SIGNED_IN_NAV.map((p) => p.path);

function App() {
  const path = usePath();
  // undefined: not known yet; null: signed out.
  const [account, setAccount] = useState<Account | null>();
  // The key created in this page's life: shown once, and filled into the Connect page. Memory only.
  const [created, setCreated] = useState<CreatedKey>();

  useEffect(() => {
    api<{ signed_in: boolean; account?: Account }>('GET', '/api/session')
      .then((session) => setAccount(session.account ?? null))
      .catch(() => setAccount(null));
  }, []);

  // Signed-out visitors of a signed-in page go to log in; signed-in ones of the sign-in pages go on.
  const page = path === '/' ? (account ? '/keys' : '/login') : path;
  useEffect(() => {
    if (account === undefined) return;
    if (!account && SIGNED_IN_PAGES.includes(page)) navigate('/login');
    else if (page !== path || (account && (page === '/login' || page === '/register'))) navigate(account ? '/keys' : page);
  }, [account, page, path]);

  const logout = async () => {
    try {
      await api('POST', '/api/logout');
    } catch {
      // Signed out here all the same; the server's session ends at its expiry.
      console.warn('the server did not confirm the logout');
    }
    setAccount(null);
    setCreated(undefined);
    navigate('/login');
  };

  if (account === undefined) return <p class="loading">Loading…</p>;
  const signedIn = (next: Account) => setAccount(next);
  return (
    <>
      <header>
        <a class="brand" href="/" onClick={(e) => (e.preventDefault(), navigate('/'))}>
          MCPWorks
        </a>
        <nav aria-label="Main">
          {(account ? SIGNED_IN_NAV : SIGNED_OUT_NAV).map((item) => (
            <Link key={item.path} href={item.path} current={page === item.path}>
              {item.label}
            </Link>
          ))}
          {account && (
            <>
              <span class="who">{account.email}</span>
              <button type="button" onClick={logout}>
                Log out
              </button>
            </>
          )}
        </nav>
      </header>
      <main>
        {!account && page === '/register' && <RegisterPage onSignedIn={signedIn} />}
        {!account && page !== '/register' && page !== '/consent' && <LoginPage onSignedIn={signedIn} />}
        {/* An MCP client's sign-in: logged out, log in here and the request is shown on the same page. */}
        {!account && page === '/consent' && <LoginPage onSignedIn={signedIn} stay />}
        {account && page === '/consent' && <ConsentPage />}
        {account && page === '/keys' && <KeysPage created={created} onCreated={setCreated} />}
        {account && page === '/connect' && <ConnectPage created={created} />}
        {account && page === '/functions' && <FunctionsPage />}
        {account && page === '/executions' && <ExecutionsPage />}
        {account && page === '/agents' && <AgentsPage />}
        {account && page === '/usage' && <UsagePage />}
        {account && page === '/account' && <AccountPage account={account} />}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
