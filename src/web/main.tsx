import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, type Account, type CreatedKey } from './api';
import { Link } from './components';
import { AccountPage, LoginPage, RegisterPage } from './pages/account';
import { ConnectPage } from './pages/connect';
import { ConsentPage } from './pages/consent';
import { ExecutionsPage } from './pages/executions';
import { FunctionsPage } from './pages/functions';
import { KeysPage } from './pages/keys';
import { UsagePage } from './pages/usage';
import { navigate, usePath } from './router';

const SIGNED_IN_PAGES = ['/keys', '/connect', '/functions', '/executions', '/usage', '/account'];

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
          {account ? (
            <>
              <Link href="/keys" current={page === '/keys'}>
                API keys
              </Link>
              <Link href="/connect" current={page === '/connect'}>
                Connect
              </Link>
              <Link href="/functions" current={page === '/functions'}>
                Functions
              </Link>
              <Link href="/executions" current={page === '/executions'}>
                Executions
              </Link>
              <Link href="/usage" current={page === '/usage'}>
                Usage
              </Link>
              <Link href="/account" current={page === '/account'}>
                Account
              </Link>
              <span class="who">{account.email}</span>
              <button type="button" onClick={logout}>
                Log out
              </button>
            </>
          ) : (
            <>
              <Link href="/login" current={page === '/login'}>
                Log in
              </Link>
              <Link href="/register" current={page === '/register'}>
                Sign up
              </Link>
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
        {account && page === '/usage' && <UsagePage />}
        {account && page === '/account' && <AccountPage account={account} />}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
