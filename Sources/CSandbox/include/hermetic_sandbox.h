#ifndef HERMETIC_SANDBOX_H
#define HERMETIC_SANDBOX_H
/* The sandbox's child side is written here, in C: it runs between clone() and execve(), where a
   multi-threaded Swift process must run no Swift code. Filled in by the sandbox work (issue 3). */
int hermetic_sandbox_abi_version(void);
#endif
