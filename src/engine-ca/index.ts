export { EngineCa, type EngineTls, type IssueServerRequest } from './engine-ca.js';
export { EngineCaError } from './openssl.js';
