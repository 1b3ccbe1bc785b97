/*
 * bcryptprimitives.dll for Wine 8: Go >= 1.22 gets its random bytes from
 * ProcessPrng in bcryptprimitives.dll, which Wine added only in 9.x. This
 * shim exports ProcessPrng on top of advapi32's RtlGenRandom
 * (SystemFunction036), which Wine 8 has. Test use only; see ../README.md.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* ProcessPrng fills data with len random bytes. Windows' ProcessPrng never
 * fails; should RtlGenRandom fail here, FALSE makes Go's runtime abort with
 * its own message rather than run on without randomness. */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}
