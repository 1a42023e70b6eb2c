// LD_PRELOAD helper for crash diagnosis: on SIGSEGV/SIGBUS/SIGABRT print the
// native backtrace (libraries + offsets) to stderr, then die with the signal.
// Python's faulthandler prints the Python frames first and then re-raises into
// this handler. Build: gcc -shared -fPIC -O1 -o segv_bt.so segv_bt.c
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void handler(int sig, siginfo_t* si, void* ctx) {
  (void)ctx;
  char buf[128];
  int n = 0;
  const char* head = "\n=== native backtrace (segv_bt) signal ";
  write(2, head, strlen(head));
  n = 0;
  int s = sig;
  char num[16];
  do { num[n++] = '0' + s % 10; s /= 10; } while (s && n < 15);
  for (int i = n - 1; i >= 0; --i) write(2, &num[i], 1);
  unsigned long a = (unsigned long)si->si_addr;
  const char* hx = "0123456789abcdef";
  const char* at = " addr 0x";
  write(2, at, strlen(at));
  n = 0;
  for (int i = 60; i >= 0; i -= 4) buf[n++] = hx[(a >> i) & 15];
  buf[n++] = '\n';
  write(2, buf, n);
  void* frames[64];
  int k = backtrace(frames, 64);
  backtrace_symbols_fd(frames, k, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}

__attribute__((constructor)) static void install(void) {
  static char stack[1 << 16];
  stack_t ss;
  ss.ss_sp = stack;
  ss.ss_size = sizeof(stack);
  ss.ss_flags = 0;
  sigaltstack(&ss, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &sa, 0);
  sigaction(SIGBUS, &sa, 0);
  sigaction(SIGABRT, &sa, 0);
}
