import assert from 'node:assert/strict';
import { parseNvidiaSmi, NVIDIA_SMI_QUERY } from '../../server/hosts/nvidiaSmi.ts';

// The shape nvidia-smi prints for NVIDIA_SMI_QUERY (csv,noheader,nounits): "index, uuid, name, total, used, util".
const EIGHT_H100 = `0, GPU-0d9a8f54-5c7e-1b2a-9b3c-6f0e8a1d2c3b, NVIDIA H100 80GB HBM3, 81559, 0, 0
1, GPU-1e0b9a65-6d8f-2c3b-ac4d-7a1f9b2e3d4c, NVIDIA H100 80GB HBM3, 81559, 1024, 37
2, GPU-2f1cab76-7e9a-3d4c-bd5e-8b2aac3f4e5d, NVIDIA H100 80GB HBM3, 81559, 79000, 100
`;

describe('nvidia-smi parser', () => {
  it('asks for exactly the fields the parser reads', () => {
    assert.deepEqual(NVIDIA_SMI_QUERY, ['nvidia-smi', '--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu', '--format=csv,noheader,nounits']);
  });
  it('parses each GPU', () => {
    const gpus = parseNvidiaSmi(EIGHT_H100);
    assert.equal(gpus.length, 3);
    assert.deepEqual(gpus[1], { index: 1, uuid: 'GPU-1e0b9a65-6d8f-2c3b-ac4d-7a1f9b2e3d4c', name: 'NVIDIA H100 80GB HBM3', memoryTotalMiB: 81559, memoryUsedMiB: 1024, utilizationPct: 37 });
  });
  it('reads [N/A] and [Not Supported] fields as 0, and CRLF line ends', () => {
    const gpus = parseNvidiaSmi('0, GPU-abc, NVIDIA GeForce RTX 3090, 24576, [N/A], [Not Supported]\r\n');
    assert.equal(gpus[0].memoryUsedMiB, 0);
    assert.equal(gpus[0].utilizationPct, 0);
  });
  it('gives no GPUs for empty output and refuses garbage with the line', () => {
    assert.deepEqual(parseNvidiaSmi('\n'), []);
    assert.throws(() => parseNvidiaSmi('NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'), /unexpected nvidia-smi line: "NVIDIA-SMI has failed/);
  });
});
