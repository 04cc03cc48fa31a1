/** The /proc fallback source: what the rest of the plugin may use. */
export { AddressDecoder } from "./address-decoder.ts";
export { heuristicDirection } from "./direction.ts";
export { readKernelRelease, readVersionSignature } from "./kernel-info.ts";
export { type ProcScan, scanProc, scanProcSync, type ScanOptions } from "./scan.ts";
export { parseTcpTable, OPEN_TCP_STATES, type TcpRow, type TcpRowHandler, TcpState, TcpTableParser, type TcpTableParserOptions } from "./tcp-table.ts";
