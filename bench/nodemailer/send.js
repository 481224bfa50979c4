#!/usr/bin/env node
// bench/nodemailer/send.js: the nodemailer sender of bench/compare.sh.
//
//   node send.js --port P --ca CA.pem [--count 10000] [--size 2048]
//                [--conns 20] [--inflight 200] [--host 127.0.0.1]
//                [--servername localhost]
//
// One pooled SMTP transport (STARTTLS required, TLS >= 1.2, the server's
// certificate verified against CA.pem), COUNT messages of about SIZE bytes
// each (the composed RFC 5322 message, headers included), INFLIGHT
// sendMail() promises kept in flight, at most CONNS connections. Prints one
// JSON object: accepted, failed, wall_s (first sendMail to last reply),
// msgs_per_s, cpu_s (this process's own user+system, start-up included),
// msg_bytes, errors (a few distinct error messages).
//
// The host is an IP address on purpose: given a name, nodemailer asks the
// DNS resolver (resolve4/resolve6) before it falls back to the hosts file,
// and the benchmark must not send anything off the machine. The
// certificate is still checked, against --servername (SNI and name).
'use strict';

const fs = require('fs');
const nodemailer = require('nodemailer');
const MailComposer = require('nodemailer/lib/mail-composer');

function parseArgs(argv) {
    const o = {
        host: '127.0.0.1',
        servername: 'localhost',
        port: 0,
        ca: '',
        count: 10000,
        size: 2048,
        conns: 20,
        inflight: 200
    };
    for (let i = 2; i < argv.length; i++) {
        const k = argv[i].replace(/^--/, '');
        if (!(k in o) || i + 1 >= argv.length) {
            console.error('usage: node send.js --port P --ca CA.pem [--count N] [--size BYTES] ' +
                '[--conns C] [--inflight F] [--host IP] [--servername NAME]');
            process.exit(2);
        }
        const v = argv[++i];
        o[k] = typeof o[k] === 'number' ? Number(v) : v;
    }
    if (!o.port || !o.ca) {
        console.error('send.js: --port and --ca are required');
        process.exit(2);
    }
    return o;
}

const FROM = 'nodemailer@bench.test';
const rcpt = i => `user${i}@example.test`;

function mail(i, text) {
    return {
        from: FROM,
        to: rcpt(i),
        subject: `ringmail bench message ${i}`,
        text
    };
}

// Body text (76-character ASCII lines, so 7bit, no encoding) of a length
// that makes the composed message SIZE bytes for a typical index.
async function bodyFor(size, sample) {
    const line = 'The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnopqrst';
    const make = n => {
        let s = '';
        while (s.length < n) s += line.slice(0, Math.min(76, n - s.length)) + '\r\n';
        return s;
    };
    const build = text => new Promise((resolve, reject) =>
        new MailComposer(mail(sample, text)).compile().build((err, buf) => err ? reject(err) : resolve(buf)));
    let n = size;
    let text = make(n);
    for (let k = 0; k < 4; k++) {
        const len = (await build(text)).length;
        if (len === size) break;
        n = Math.max(0, n - (len - size));
        text = make(n);
    }
    return { text, bytes: (await build(text)).length };
}

async function main() {
    const o = parseArgs(process.argv);
    const { text, bytes } = await bodyFor(o.size, Math.floor(o.count / 2));

    const transport = nodemailer.createTransport({
        host: o.host,
        port: o.port,
        secure: false,
        requireTLS: true,
        pool: true,
        maxConnections: o.conns,
        maxMessages: Infinity,
        name: 'nodemailer.bench.test',
        tls: {
            ca: fs.readFileSync(o.ca),
            servername: o.servername,
            minVersion: 'TLSv1.2',
            rejectUnauthorized: true
        },
        logger: false
    });

    let next = 0;
    let accepted = 0;
    let failed = 0;
    const errors = new Map();
    const t0 = process.hrtime.bigint();

    async function worker() {
        while (next < o.count) {
            const i = next++;
            try {
                const info = await transport.sendMail(mail(i, text));
                if (info.accepted && info.accepted.length === 1) accepted++;
                else failed++;
            } catch (err) {
                failed++;
                const m = String(err && err.message || err).slice(0, 200);
                errors.set(m, (errors.get(m) || 0) + 1);
            }
        }
    }
    const workers = [];
    for (let w = 0; w < Math.min(o.inflight, o.count); w++) workers.push(worker());
    await Promise.all(workers);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    transport.close();

    const cpu = process.cpuUsage();
    const out = {
        sender: 'nodemailer',
        nodemailer_version: require('nodemailer/package.json').version,
        node_version: process.version,
        count: o.count,
        accepted,
        failed,
        wall_s: wall,
        msgs_per_s: accepted / wall,
        cpu_s: (cpu.user + cpu.system) / 1e6,
        msg_bytes: bytes,
        connections_max: o.conns,
        inflight: o.inflight,
        errors: Object.fromEntries([...errors.entries()].slice(0, 5))
    };
    process.stdout.write(JSON.stringify(out) + '\n');
    // Idle pooled sockets are closed by transport.close(); exit now anyway.
    process.exit(failed ? 1 : 0);
}

main().catch(err => {
    console.error('send.js:', err && err.stack || err);
    process.exit(1);
});
