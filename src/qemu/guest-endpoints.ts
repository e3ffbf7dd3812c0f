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
  /** Shared guest-RAM file: file offset = guest-physical address (q35, RAM below 2 GiB). */
  ramFile?: string;
  /** Guest RAM size in bytes. */
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
