import type { QemuRamHost } from './ram-host.js';
import type { RamRange } from './ram-map.js';

/**
 * How to reach one QEMU guest: what the lab writes for the guests it boots, and what an
 * attach needs. The shadow engine only ever sees this, never how the guest started.
 */
export interface GuestEndpoints {
  /** Human name of the guest (the lab guest's name, or derived from the QMP path). */
  name: string;
  /** QMP unix socket. */
  qmpSocket: string;
  /** gdbstub unix socket when QEMU was started with one; otherwise enabled at attach time. */
  gdbSocket?: string;
  /**
   * Shared guest-RAM file (a memory-backend-file with share=on): its presence is what
   * enables the doorbell transport. With several backends (NUMA), the first one.
   */
  ramFile?: string;
  /** Every backend's RAM file by RAM block name (NUMA: one per node); default {block: ramFile}. */
  ramFiles?: Record<string, string>;
  /**
   * Where guest RAM is mapped (guest-physical ranges → block and offset), when the starter
   * of the guest recorded it; otherwise learnt from QEMU (`info mtree -f`) at attach.
   */
  ram?: RamRange[];
  /**
   * Guest RAM inside the QEMU process (a QEMU without shared RAM files that this user may
   * ptrace): its pid and each RAM block's host address, proven at attach. Enables the
   * doorbell transport like a RAM file does (src/memory/process-memory.ts).
   */
  qemuRam?: QemuRamHost;
  /** Why QEMU's process memory is not used (one line), when it was tried and refused. */
  qemuRamRefused?: string;
  /** Guest RAM size in bytes (all ranges). */
  ramSize: number;
  /** Private (0700) directory for this guest's sockets, logs and the redirection journal. */
  runDir: string;
  /**
   * A spare serial port reserved for waking the shadow: the host end (a QEMU chardev
   * socket) and the guest's device node. Writing one byte raises an interrupt that ends
   * the shadow's ppoll at once, so an idle shadow need not poll.
   */
  wake?: { socket: string; device: string };
}

/** A guest to inspect: its endpoints, plus what the caller knows of it for metadata. */
export type InspectedGuest = GuestEndpoints & { kernelRelease?: string; captureId?: string };
