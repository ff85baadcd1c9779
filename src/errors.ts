// The error type for user mistakes (a bad config, dataset row, request or file): one message
// that says what is wrong, where, and how to fix it. The CLI prints it without a stack trace and
// exits non-zero; the API answers it with a 4xx. Anything else is a bug and keeps its stack.
export class UserError extends Error {
  override readonly name = "UserError";
  constructor(
    readonly what: string,
    readonly where?: string,
    readonly fix?: string,
  ) {
    super([where ? `${where}: ${what}` : what, fix ? `(${fix})` : ""].filter(Boolean).join(" "));
  }
}

export function isUserError(error: unknown): error is UserError {
  return error instanceof UserError;
}
