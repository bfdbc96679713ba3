"""Label mining: each rule family on sentences written for it, codes, policy, CLI on bad input, Open-i targets."""
import subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from cxr_fracture.mining import (find_mentions, split_sections, split_sentences, parse_codes, Policy, mine_record,
                                 mine_labels, read_records, load_openi, evaluate_labels, baseline_labels,
                                 summarize, CLASSES)

CLI = str(Path(sys.executable).parent / 'cxr-fracture')


def states(text, **kw): return [(m.cls, m.state) for m in find_mentions(text, **kw)]
def state(text, **kw):
    s = {st for _, st in states(text, **kw)}
    assert len(s) == 1, (text, states(text, **kw))
    return s.pop()


# --- text: mentions tied to anatomy ------------------------------------------------------------
@pytest.mark.parametrize('text,cls', [
    ('Fractures of the left 5th and 6th ribs', 'rib_fracture'), ('Acute rib fx', 'rib_fracture'),
    ('Displaced clavicular fracture', 'clavicle_fracture'), ('Fractured clavicle', 'clavicle_fracture'),
    ('Broken collarbone', 'clavicle_fracture'), ('There is a break in the cortex of the right 4th rib', 'rib_fracture'),
    ('Cortical discontinuity of the left clavicle', 'clavicle_fracture'), ('Right costal fracture', 'rib_fracture')])
def test_affirmed_mentions(text, cls):
    assert states(text) == [(cls, 'positive')]


@pytest.mark.parametrize('text', ['No acute fracture. The ribs are normal.', 'Acromioclavicular joint separation, no fracture seen',
                                  'Blunted costophrenic angle', 'Fracture of the left humerus', 'Rib series ordered', ''])
def test_no_tied_mention(text):
    assert states(text) == []


def test_two_classes_in_one_sentence_keep_their_own_side_and_ribs():
    ms = find_mentions('Healed fracture of the right clavicle and left 6th rib')
    got = {m.cls: (m.side, m.ribs, m.state) for m in ms}
    assert got == {'clavicle_fracture': ('right', '', 'history'), 'rib_fracture': ('left', '6', 'history')}


@pytest.mark.parametrize('text,side,site,ribs', [
    ('Fractures of the left 5th and 6th ribs', 'left', '', '5,6'),
    ('Right posterior 3rd through 5th rib fractures', 'right', 'posterior', '3,4,5'),
    ('Bilateral lateral rib fractures', 'bilateral', 'lateral', ''),
    ('Fracture of the posterior rib 8 on the left', 'left', 'posterior', '8'),
    ('Acute fracture of the eleventh and twelfth ribs', '', '', '11,12'),
    ('Fracture of the distal right clavicle', 'right', 'distal', '')])
def test_laterality_location_rib_numbers(text, side, site, ribs):
    m = find_mentions(text)[0]
    assert (m.side, m.site, m.ribs) == (side, site, ribs)


# --- negation ----------------------------------------------------------------------------------
@pytest.mark.parametrize('text', [
    'No rib fracture', 'Without rib fracture', 'Negative for clavicle fracture', 'No evidence of rib fracture',
    'Rib fracture has been ruled out', 'The rib fracture has resolved', 'Rib fractures are not identified',
    'No signs of clavicle fracture', 'No pneumothorax, pleural effusion, consolidation, or displaced rib fracture',
    'The clavicles are intact without fracture', 'No fracture of the ribs or clavicles'])
def test_negation_cues(text):
    assert state(text) == 'negative'


def test_no_new_is_its_own_rule():
    assert [m.rule for m in find_mentions('No new rib fracture')] == ['negated_new(No new)']
    assert [m.rule for m in find_mentions('No rib fracture')] == ['negated(No)']


@pytest.mark.parametrize('text,expected', [
    ('No pneumothorax but there are acute left rib fractures', 'positive'),
    ('No effusion; however a right clavicle fracture is present', 'positive'),
    ('No acute abnormality, although old rib fractures are seen', 'history'),
    ('There is no pneumothorax and there are old left rib fractures', 'history'),
    ('Negative for acute fracture, old left rib fractures', 'history')])
def test_termination_words_end_the_negation_scope(text, expected):
    assert state(text) == expected


@pytest.mark.parametrize('text', ['No rib fracture', 'No rib fracture.', 'No rib fracture. ', 'Possible rib fracture.',
                                  'Healed rib fractures.', 'Acute left rib fracture.'])
def test_trailing_period_does_not_change_the_answer(text):
    assert states(text) == states(text.rstrip(' .'))
    assert mine_record({'r': text})[0] == mine_record({'r': text.rstrip(' .')})[0]


# --- pseudo-negation, uncertainty, hypotheticals, history --------------------------------------
@pytest.mark.parametrize('text,expected', [
    ('No change in the old rib fracture', 'history'), ('No interval change in the left clavicle fracture', 'positive'),
    ('Right rib fractures, not changed', 'positive'), ('Without significant change of the healing rib fractures', 'history')])
def test_pseudo_negations_do_not_negate(text, expected):
    assert state(text) == expected


@pytest.mark.parametrize('text', [
    'Possible left rib fracture', 'Questionable clavicle fracture', 'Rib fracture cannot be excluded',
    'Cannot exclude a rib fracture', 'Suspected right 7th rib fracture', 'Concerning for rib fracture',
    'May represent a healing rib fracture', 'Question of clavicular fracture', 'Rib fracture?',
    'Rib fracture is not excluded', 'Rib fracture versus overlapping vessels'])
def test_uncertainty_cues(text):
    assert state(text) == 'uncertain'


@pytest.mark.parametrize('text', ['If there is concern for fracture, consider rib series',
                                  'Recommend dedicated rib views to evaluate for rib fracture',
                                  'Clinical correlation to exclude rib fracture'])
def test_hypotheticals_give_no_label(text):
    assert state(text) == 'hypothetical'
    row, _ = mine_record({'r': text})
    assert pd.isna(row['rib_fracture']) and row['rib_fracture_rule'].startswith('hypothetical')


@pytest.mark.parametrize('text', ['Old left rib fractures', 'Healed right clavicle fracture', 'Healing 5th rib fracture',
                                  'Chronic rib fracture deformity', 'Remote left clavicle fracture', 'Prior rib fractures',
                                  'Ununited fracture of the distal clavicle', 'Callus about the left 6th rib',
                                  'Deformity of the right 5th rib, consistent with old fracture',
                                  'History of rib fractures', 'Fracture of the left clavicle, which is healed'])
def test_history_cues(text):
    assert state(text) == 'history'


def test_acute_beside_old_stays_acute():
    assert state('Compared to prior exam, acute right 4th rib fracture') == 'positive'
    ms = find_mentions('Old left rib fractures. Acute right clavicle fracture.')
    assert {(m.cls, m.state) for m in ms} == {('rib_fracture', 'history'), ('clavicle_fracture', 'positive')}


def test_device_fractures_are_not_bone_fractures():
    assert state('Central venous catheter fracture at the level of the right clavicle') == 'device'
    assert state('Fractured sternal wires near the left 2nd rib') == 'device'
    assert state('Clavicle fixation plate with healed fracture') == 'history'


# --- sections and sentences ------------------------------------------------------------------
def test_section_splitting_skips_the_question():
    t = 'INDICATION: Fall. Rib fracture? FINDINGS: No pneumothorax. IMPRESSION: Left 6th rib fracture.'
    assert [s for s, _ in split_sections(t)] == ['indication', 'findings', 'impression']
    assert [(m.section, m.state) for m in find_mentions(t)] == [('impression', 'positive')]
    assert find_mentions('Rule out rib fracture', section='history') == []


def test_sentence_splitting():
    assert split_sentences('1. No rib fracture. 2. A 1.8 cm nodule vs. scar; ok.\nBones intact') == \
        ['1', 'No rib fracture', '2', 'A 1.8 cm nodule vs. scar', 'ok', 'Bones intact']


# --- codes -------------------------------------------------------------------------------------
@pytest.mark.parametrize('code,cls,st', [
    ('807.0', 'rib_fracture', 'positive'), ('807.03', 'rib_fracture', 'positive'), ('80713', 'rib_fracture', 'positive'),
    ('810.00', 'clavicle_fracture', 'positive'), ('810', 'clavicle_fracture', 'positive'),
    ('S22.31XA', 'rib_fracture', 'positive'), ('S2242XA', 'rib_fracture', 'positive'), ('s22.39xd', 'rib_fracture', 'history'),
    ('S42.001A', 'clavicle_fracture', 'positive'), ('S42.022K', 'clavicle_fracture', 'history'),
    ('S42.0', 'clavicle_fracture', 'positive'), ('807.4', 'rib_fracture', 'positive'), ('S22.5XXA', 'rib_fracture', 'positive')])
def test_codes(code, cls, st):
    hits, warns = parse_codes(code)
    assert [(h[0], h[1]) for h in hits] == [(cls, st)] and warns == []


def test_codes_delimited_lists_flail_and_malformed():
    hits, warns = parse_codes('S22.31XA; 486|V54.81, E888.9  807.4')
    assert [h[3] for h in hits] == ['icd10_rib', 'icd9_flail_chest']
    assert parse_codes(['807.4', 'S22.5XXA'], Policy(flail_chest=False)) == ([], [])
    hits, warns = parse_codes("['S42.001A', 'S2.2', 'S223.1XA', 'rib', '12345678']")
    assert len(hits) == 1 and len(warns) == 4 and all('malformed code' in w for w in warns)
    assert parse_codes(None) == ([], []) and parse_codes(float('nan')) == ([], [])
    row, w = mine_record({}, codes='S22.31XA;garbage!')
    assert row['rib_fracture'] == 1 and row['rib_fracture_source'] == 'code' and w == ["malformed code 'GARBAGE!' ignored"]


# --- policy and aggregation ----------------------------------------------------------------------
@pytest.mark.parametrize('uncertain,healed,expect', [
    ('uncertain', 'uncertain', (-1, -1)), ('positive', 'negative', (1, 0)), ('negative', 'positive', (0, 1))])
def test_policy_mapping(uncertain, healed, expect):
    p = Policy(uncertain=uncertain, healed=healed)
    r1, _ = mine_record({'r': 'Possible right rib fracture.'}, policy=p)
    r2, _ = mine_record({'r': 'Healed left clavicle fracture.'}, policy=p)
    assert (r1['rib_fracture'], r2['clavicle_fracture']) == expect
    with pytest.raises(ValueError, match='Policy.uncertain'): Policy(uncertain='yes')


def test_aggregation_positive_wins_then_uncertain_then_negative():
    r, _ = mine_record({'f': 'No rib fracture on the right. Possible left rib fracture.', 'i': 'Acute left 6th rib fracture.'})
    assert (r['rib_fracture'], r['rib_fracture_evidence'], r['rib_fracture_source']) == (1, 'Acute left 6th rib fracture', 'text')
    r, _ = mine_record({'f': 'No rib fracture. Possible left rib fracture.'})
    assert r['rib_fracture'] == -1
    r, _ = mine_record({'f': 'No rib fracture.'}, codes='S22.32XA')
    assert (r['rib_fracture'], r['rib_fracture_source'], r['rib_fracture_code'], r['rib_fracture_text']) == (1, 'code', 1, 0)
    r, _ = mine_record({'f': 'Left 5th rib fracture.'}, codes='S22.32XA')
    assert r['rib_fracture_source'] == 'both' and r['rib_fracture_evidence'] == 'code S22.32XA | Left 5th rib fracture'


def test_mined_labels_join_a_manifest():
    "LABELS.csv as mine-labels writes it joins a manifest through cxr_fracture.manifest.merge_labels."
    from cxr_fracture.manifest import merge_labels
    lab = mine_labels(pd.DataFrame({'sid': ['a', 'b'], 'r': ['Left rib fracture', 'No clavicle fracture']}), 'sid', ['r'])
    man = pd.DataFrame({'image_id': ['1', '2', '3'], 'path': ['1.png', '2.png', '3.png'], 'patient_id': ['p1', 'p2', 'p3'],
                        'study_id': ['a', 'b', 'c'], 'boxes': ['[]'] * 3, 'role': ['U'] * 3})
    m, rep = merge_labels(man, lab, on='study_id', labels_on='sid')
    assert m.rib_fracture.fillna(9).tolist() == [1, 9, 9] and m.clavicle_fracture.fillna(9).tolist() == [9, 0, 9]
    assert m.role.tolist()[0] == 'P'


# --- bad input and the CLI -----------------------------------------------------------------------
def test_mine_labels_never_dies_on_a_record():
    df = pd.DataFrame({'id': [1, 2, 3, 4], 't': ['', None, 12.5, 'Rib fx\ufffd'], 'c': [None, ['S22.31XA'], 'x..y', 3]})
    lab = mine_labels(df, 'id', ['t'], ['c'])
    assert len(lab) == 4 and lab.rib_fracture.fillna(9).tolist() == [9, 1, 9, 1]
    assert 'empty text and no codes' in lab.warnings[0] and 'undecodable' in lab.warnings[3] and 'malformed' in lab.warnings[2]
    with pytest.raises(KeyError, match=r"\['nope'\] not found"): mine_labels(df, 'id', ['nope'])
    assert 'rib_fracture: positive 2' in summarize(lab)


def test_cli_on_a_small_csv_with_bad_bytes_and_empty_text(tmp_path):
    p = tmp_path / 'records.csv'
    p.write_bytes('study,findings,impression,dx\n'
                  's1,No pneumothorax.,Acute left 5th and 6th rib fractures.,S22.42XA\n'
                  's2,Old healed right clavicle fracture.,No acute disease,\n'
                  's3,,,\n'
                  's4,Caf\xe9 au lait spot. No rib fracture,,xx.9\n'
                  's5,Possible right rib fracture,,810.00\n'.encode('latin-1'))
    out = tmp_path / 'labels.csv'
    r = subprocess.run([CLI, 'mine-labels', str(p), '--id-col', 'study', '--text-col', 'findings', '--text-col', 'impression',
                        '--code-col', 'dx', '--uncertain', 'negative', '--healed', 'positive', '--out', str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'not UTF-8' in r.stderr and 'code/text agreement' in r.stdout and 'rib_fracture: positive 1' in r.stdout
    lab = pd.read_csv(out, dtype={'rib_fracture': 'Int64', 'clavicle_fracture': 'Int64'})
    assert list(lab.columns[:7]) == ['study', 'rib_fracture', 'rib_fracture_source', 'rib_fracture_evidence',
                                     'rib_fracture_rule', 'rib_fracture_side', 'rib_fracture_site']
    for c in CLASSES:
        assert {f'{c}_source', f'{c}_evidence', f'{c}_rule'} <= set(lab.columns)
    assert lab.rib_fracture.fillna(9).tolist() == [1, 9, 9, 0, 0]
    assert lab.clavicle_fracture.fillna(9).tolist() == [9, 1, 9, 9, 1]
    assert lab.rib_fracture_source[0] == 'both' and lab.rib_fracture_ribs[0] == '5,6'
    assert 'empty text' in lab.warnings[2] and 'undecodable' in lab.warnings[3] and "malformed code 'XX.9'" in lab.warnings[3]


def test_cli_errors_are_clear(tmp_path):
    p = tmp_path / 'r.csv'; p.write_text('id,report\n1,No rib fracture\n')
    r = subprocess.run([CLI, 'mine-labels', str(p), '--id-col', 'id', '--text-col', 'findings', '--out', str(tmp_path / 'o.csv')],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "['findings'] not found" in r.stderr and "'report'" in r.stderr
    r = subprocess.run([CLI, 'mine-labels', str(tmp_path / 'missing.csv'), '--id-col', 'id', '--text-col', 'report',
                        '--out', str(tmp_path / 'o.csv')], capture_output=True, text=True)
    assert r.returncode == 2 and 'no such file' in r.stderr
    (tmp_path / 'r.parquet').write_bytes(b'PAR1')
    try: import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match='needs pyarrow'): read_records(tmp_path / 'r.parquet')


# --- real reports ------------------------------------------------------------------------------
def test_openi_targets(shared_data):
    oi = load_openi(shared_data / 'openi_reports' / 'ecgen-radiology-even.tgz')
    assert len(oi) == 1976
    ref = oi[[f'ref_{c}' for c in CLASSES]].rename(columns=lambda c: c[4:])
    assert ref.sum().tolist() == [33, 7]
    lab = mine_labels(oi, 'id', ['findings', 'impression'], policy=Policy(uncertain='negative', healed='positive'))
    s = evaluate_labels(lab, ref)
    print(s)
    assert s.loc['rib_fracture', 'f1'] >= 0.92 and s.loc['clavicle_fracture', 'f1'] >= 0.90
    assert (s.precision >= 0.90).all()
    naive = evaluate_labels(baseline_labels(oi, ['findings', 'impression']), ref)
    assert s.loc['rib_fracture', 'f1'] > naive.loc['rib_fracture', 'f1']


def test_more_phrasings():
    assert find_mentions('Multiple left-sided rib fractures')[0].side == 'left'
    assert state('Findings may be secondary to rib fracture') == 'uncertain'
    assert state('No pneumothorax to suggest rib fracture') == 'negative'
    assert state('Right clavicle is fractured') == 'positive'
    assert state('Minimally displaced fracture of the left sixth rib without pneumothorax') == 'positive'
    assert state('The patient is status post right clavicle fracture fixation') == 'history'
