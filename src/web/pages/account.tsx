import { useState } from 'preact/hooks';
import { api, ApiError, describeError, type Account } from '../api';
import { ErrorMessage, Link, PageTitle, useSubmit } from '../components';
import { navigate } from '../router';

interface FormError {
  message: string;
  field: string | undefined;
}

const failure = (error: unknown): FormError => ({
  message: describeError(error),
  field: error instanceof ApiError ? error.field : undefined,
});

/** aria-invalid and aria-describedby for a field the server named in its error. */
const invalidIf = (error: FormError | undefined, field: string, errorId: string) =>
  error?.field === field ? { 'aria-invalid': true as const, 'aria-describedby': errorId } : {};

async function signIn(email: string, password: string): Promise<Account> {
  // The cookie alone: the token never reaches a script (HttpOnly cookie).
  await api('POST', '/api/login', { email, password, session: 'cookie' });
  return api<Account>('GET', '/api/account');
}

/** `stay`: signed in, the page stays where it is (the consent page asked to log in first). */
export function LoginPage(props: { onSignedIn: (account: Account) => void; stay?: boolean }) {
  const { busy, error, submit: onSubmit } = useSubmit(failure);
  const submit = onSubmit(async (element) => {
    const form = new FormData(element);
    props.onSignedIn(await signIn(String(form.get('email')), String(form.get('password'))));
    if (!props.stay) navigate('/keys');
  });
  return (
    <section class="narrow">
      <PageTitle>Log in</PageTitle>
      <form onSubmit={submit} aria-describedby="login-error" noValidate>
        <label for="login-email">Email</label>
        <input id="login-email" name="email" type="email" autoComplete="username" required {...invalidIf(error, 'email', 'login-error')} />
        <label for="login-password">Password</label>
        <input
          id="login-password"
          name="password"
          type="password"
          autoComplete="current-password"
          required
          {...invalidIf(error, 'password', 'login-error')}
        />
        <ErrorMessage id="login-error" message={error?.message} />
        <button type="submit" disabled={busy}>
          Log in
        </button>
      </form>
      <p>
        No account yet? <Link href="/register">Sign up</Link>
      </p>
    </section>
  );
}

export function RegisterPage(props: { onSignedIn: (account: Account) => void }) {
  const { busy, error, submit: onSubmit } = useSubmit(failure);
  const submit = onSubmit(async (element) => {
    const form = new FormData(element);
    const email = String(form.get('email'));
    const password = String(form.get('password'));
    await api('POST', '/api/register', { email, password });
    props.onSignedIn(await signIn(email, password));
    navigate('/keys');
  });
  return (
    <section class="narrow">
      <PageTitle>Sign up</PageTitle>
      <form onSubmit={submit} aria-describedby="register-error" noValidate>
        <label for="register-email">Email</label>
        <input
          id="register-email"
          name="email"
          type="email"
          autoComplete="username"
          required
          {...invalidIf(error, 'email', 'register-error')}
        />
        <label for="register-password">Password (at least 8 characters)</label>
        <input
          id="register-password"
          name="password"
          type="password"
          autoComplete="new-password"
          minLength={8}
          required
          {...invalidIf(error, 'password', 'register-error')}
        />
        <ErrorMessage id="register-error" message={error?.message} />
        <button type="submit" disabled={busy}>
          Sign up
        </button>
      </form>
      <p>
        Have an account? <Link href="/login">Log in</Link>
      </p>
    </section>
  );
}

export function AccountPage(props: { account: Account }) {
  const [done, setDone] = useState(false);
  const { busy, error, submit: onSubmit } = useSubmit(failure);
  const submit = onSubmit(async (formElement) => {
    setDone(false);
    const form = new FormData(formElement);
    await api('POST', '/api/password', { current_password: form.get('current_password'), new_password: form.get('new_password') });
    formElement.reset();
    setDone(true);
  });
  return (
    <section class="narrow">
      <PageTitle>Account</PageTitle>
      <dl class="facts">
        <dt>Email</dt>
        <dd>{props.account.email}</dd>
        <dt>Plan</dt>
        <dd>{props.account.tier}</dd>
      </dl>
      <h2>Change password</h2>
      <form onSubmit={submit} aria-describedby="password-error" noValidate>
        <label for="current-password">Current password</label>
        <input
          id="current-password"
          name="current_password"
          type="password"
          autoComplete="current-password"
          required
          {...invalidIf(error, 'current_password', 'password-error')}
        />
        <label for="new-password">New password (at least 8 characters)</label>
        <input
          id="new-password"
          name="new_password"
          type="password"
          autoComplete="new-password"
          minLength={8}
          required
          {...invalidIf(error, 'new_password', 'password-error')}
        />
        <ErrorMessage id="password-error" message={error?.message} />
        <p class="ok" role="status">
          {done ? 'Password changed. Every other login session has been logged out.' : ''}
        </p>
        <button type="submit" disabled={busy}>
          Change password
        </button>
      </form>
    </section>
  );
}
