/*
 * labmem: the lab guest's process for the memory plugins (issue 17), linked dynamically
 * (glibc's ld.so and libc.so.6 are in the initramfs) so that it has a link map.
 *
 *   labmem FIFO
 *
 * - An anonymous private mapping with read, write and execute permission (what malfind
 *   looks for) holding LABMEM_CODE: a few x86-64 instructions, then the text
 *   LABMEM_MARKER. Its address goes to stdout as `rwx=0x...`.
 * - Every line read from FIFO (opened read-write, so no writer closing it ends the loop) is
 *   copied to the heap with strdup and kept: `stored 0xADDR LEN TEXT` on stdout. The
 *   vmaregexscan and vmayarascan tests plant strings that way and compare the address.
 * The bytes are never run; the process only waits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* xor eax,eax; mov eax,0x3c; xor edi,edi; syscall; ret; 4 x nop; then the marker at 32. */
static const unsigned char LABMEM_CODE[] = {
    0x31, 0xc0, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x31, 0xff, 0x0f, 0x05, 0xc3, 0x90, 0x90, 0x90, 0x90,
};
static const char LABMEM_MARKER[] = "VMI-LAB-RWX-MARKER-5a17";

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: labmem FIFO\n");
        return 2;
    }
    unsigned char *rwx = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (rwx == MAP_FAILED) {
        perror("labmem: mmap");
        return 1;
    }
    memset(rwx, 0xcc, 4096);
    memcpy(rwx, LABMEM_CODE, sizeof LABMEM_CODE);
    memcpy(rwx + 32, LABMEM_MARKER, sizeof LABMEM_MARKER);
    printf("rwx=%p\n", (void *)rwx);
    fflush(stdout);
    FILE *in = fopen(argv[1], "r+");
    if (!in) {
        perror("labmem: fopen");
        for (;;) pause();
    }
    char line[4096];
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = 0;
        char *kept = strdup(line);
        if (!kept) continue;
        printf("stored %p %zu %s\n", (void *)kept, strlen(kept), kept);
        fflush(stdout);
    }
    for (;;) pause();
}
