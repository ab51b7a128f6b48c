// errorText turns a Matrix error into a sentence for the user.

export function errorText(e) {
  if (!e) return "";
  if (e.errcode === "M_FORBIDDEN" && /password/i.test(e.message)) return e.message;
  const known = {
    M_USER_IN_USE: "That username is taken.",
    M_INVALID_USERNAME: "Usernames may use a-z, 0-9 and . _ = - / only.",
    M_WEAK_PASSWORD: `That password is too weak: ${e.message}`,
    M_PASSWORD_TOO_SHORT: `That password is too short: ${e.message}`,
    M_PASSWORD_NO_DIGIT: "The password needs a digit.",
    M_PASSWORD_NO_UPPERCASE: "The password needs an uppercase letter.",
    M_PASSWORD_NO_LOWERCASE: "The password needs a lowercase letter.",
    M_PASSWORD_NO_SYMBOL: "The password needs a symbol.",
    M_LIMIT_EXCEEDED: "Too many attempts: wait a moment and try again.",
    M_REGISTRATION_DISABLED: "Sign-up is closed on this server.",
  };
  return known[e.errcode] || e.message || String(e);
}
