/**
 * The part of telnet (RFC 854/855) that a serial console over ser2net needs: strip and answer option
 * negotiation, unescape IAC IAC, and send BREAK as IAC BRK (ser2net turns it into a serial break).
 * We want binary both ways (every byte value passes) and suppress-go-ahead; we let the server echo;
 * anything else (RFC 2217 com-port control, linemode, ...) is refused.
 */
export const IAC = 255;
export const DONT = 254;
export const DO = 253;
export const WONT = 252;
export const WILL = 251;
export const SB = 250;
export const BRK = 243;
export const SE = 240;
export const OPT_BINARY = 0;
export const OPT_ECHO = 1;
export const OPT_SGA = 3;

const REMOTE_OK = new Set([OPT_BINARY, OPT_ECHO, OPT_SGA]); // options we let the server enable
const LOCAL_OK = new Set([OPT_BINARY, OPT_SGA]); // options we enable on request
const CR = 13;
const NUL = 0;
const LF = 10;

type Mode = 'data' | 'iac' | 'opt' | 'sb' | 'sb-iac';

export class TelnetCodec {
  private mode: Mode = 'data';
  private verb = 0;
  private lastWasCr = false;
  private readonly remote = new Set<number>();
  private readonly local = new Set<number>();
  private readonly askedRemote = new Set<number>();
  private readonly askedLocal = new Set<number>();

  /** What we say first: binary both ways, no go-aheads. */
  hello(): Buffer {
    for (const o of [OPT_BINARY, OPT_SGA]) {
      this.askedRemote.add(o);
      this.askedLocal.add(o);
    }
    return Buffer.from([IAC, DO, OPT_BINARY, IAC, WILL, OPT_BINARY, IAC, DO, OPT_SGA, IAC, WILL, OPT_SGA]);
  }

  /** Splits received bytes into line data and the negotiation answers to send back. */
  decode(chunk: Buffer): { data: Buffer; reply: Buffer } {
    const data: number[] = [];
    const reply: number[] = [];
    for (const b of chunk) {
      switch (this.mode) {
        case 'data':
          if (b === IAC) this.mode = 'iac';
          else if (b === NUL && this.lastWasCr && !this.remote.has(OPT_BINARY)) this.lastWasCr = false; // NVT CR NUL = CR
          else {
            data.push(b);
            this.lastWasCr = b === CR;
          }
          break;
        case 'iac':
          if (b === IAC) {
            data.push(IAC);
            this.lastWasCr = false;
            this.mode = 'data';
          } else if (b >= WILL && b <= DONT) {
            this.verb = b;
            this.mode = 'opt';
          } else if (b === SB) this.mode = 'sb';
          else this.mode = 'data'; // NOP, GA, DM, AYT...: nothing to do for a console
          break;
        case 'opt':
          reply.push(...this.negotiate(this.verb, b));
          this.mode = 'data';
          break;
        case 'sb':
          if (b === IAC) this.mode = 'sb-iac';
          break;
        case 'sb-iac':
          this.mode = b === SE ? 'data' : 'sb';
          break;
      }
    }
    return { data: Buffer.from(data), reply: Buffer.from(reply) };
  }

  /** Escapes IAC; outside binary mode a lone CR goes as CR NUL, as NVT requires. */
  encode(bytes: Uint8Array): Buffer {
    const out: number[] = [];
    const binary = this.local.has(OPT_BINARY);
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      out.push(b);
      if (b === IAC) out.push(IAC);
      else if (b === CR && !binary && bytes[i + 1] !== LF) out.push(NUL);
    }
    return Buffer.from(out);
  }

  breakCommand(): Buffer {
    return Buffer.from([IAC, BRK]);
  }

  /** Simplified RFC 1143: answer only what changes our state, so two agreeing peers never loop. */
  private negotiate(verb: number, opt: number): number[] {
    const remote = verb === WILL || verb === WONT;
    const [enabled, asked, ok] = remote ? [this.remote, this.askedRemote, REMOTE_OK] : [this.local, this.askedLocal, LOCAL_OK];
    const [yes, no] = remote ? [DO, DONT] : [WILL, WONT];
    const wasAsked = asked.delete(opt);
    if (verb === WILL || verb === DO) {
      if (enabled.has(opt)) return [];
      if (!ok.has(opt)) return [IAC, no, opt];
      enabled.add(opt);
      return wasAsked ? [] : [IAC, yes, opt];
    }
    if (!enabled.delete(opt)) return []; // a refusal of what we asked for, or already off
    return [IAC, no, opt];
  }
}
