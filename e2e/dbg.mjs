import { serve } from './serve.mjs';
import { launch } from './browser.mjs';
const srv = await serve('/work/main/www'); const b = await launch();
const p = await b.newPage(); p.on('console', m => console.log('console', m.text())); await p.goto(srv.url);
const t = performance.now();
await p.setInputFiles('#file', '/work/main/bench/out/sd1-training.ckpt');
await p.locator('#architecture').waitFor({ timeout: 60000 });
console.log('summary', ((performance.now() - t) / 1000).toFixed(2), 's');
await b.close(); srv.server.close();
