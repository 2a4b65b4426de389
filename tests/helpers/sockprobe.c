/*
 * sockprobe: a tiny static test helper that runs inside guests (which have
 * no python). Built by the tests with `cc -static` (tests/runtime_util).
 *
 *   sockprobe FAMILY...        try socket() (or socketpair() for NAME-pair)
 *                              for each family and print "NAME ok" or
 *                              "NAME errno N"
 *   sockprobe bind-vsock PORT SECONDS
 *                              bind an AF_VSOCK stream socket to PORT on any
 *                              CID, print "bound" (or "errno N"), and hold
 *                              it for SECONDS
 *
 * Families: vsock, inet, inet6, unix, netlink.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/vm_sockets.h>

static int family_of(const char *name, int *type, int *proto)
{
    *type = SOCK_STREAM;
    *proto = 0;
    if (strcmp(name, "vsock") == 0)
        return AF_VSOCK;
    if (strcmp(name, "inet") == 0)
        return AF_INET;
    if (strcmp(name, "inet6") == 0)
        return AF_INET6;
    if (strcmp(name, "unix") == 0)
        return AF_UNIX;
    if (strcmp(name, "netlink") == 0) {
        *type = SOCK_RAW;
        *proto = NETLINK_ROUTE;
        return AF_NETLINK;
    }
    return -1;
}

static int probe(const char *arg)
{
    char name[32];
    int pair = 0, type, proto, family;
    size_t n = strlen(arg);
    if (n >= sizeof name)
        return 2;
    strcpy(name, arg);
    if (n > 5 && strcmp(name + n - 5, "-pair") == 0) {
        pair = 1;
        name[n - 5] = 0;
    }
    family = family_of(name, &type, &proto);
    if (family < 0) {
        fprintf(stderr, "unknown family %s\n", arg);
        return 2;
    }
    int fds[2];
    int rc = pair ? socketpair(family, type, proto, fds) : (fds[0] = socket(family, type, proto));
    if (rc < 0)
        printf("%s errno %d\n", arg, errno);
    else
        printf("%s ok\n", arg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "bind-vsock") == 0) {
        struct sockaddr_vm addr;
        memset(&addr, 0, sizeof addr);
        addr.svm_family = AF_VSOCK;
        addr.svm_cid = VMADDR_CID_ANY;
        addr.svm_port = (unsigned)strtoul(argv[2], NULL, 10);
        int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            printf("errno %d\n", errno);
            return 1;
        }
        printf("bound\n");
        fflush(stdout);
        sleep((unsigned)strtoul(argv[3], NULL, 10));
        return 0;
    }
    for (int i = 1; i < argc; i++)
        if (probe(argv[i]) != 0)
            return 2;
    return 0;
}
