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


# === rules added after the audit, grouped by family; sentences written for each rule ===========

def cls_state(text, cls):
    "The record-level label and the mention states of one class."
    row, _ = mine_record({'r': text})
    return row[cls], [m.state for m in find_mentions(text) if m.cls == cls]


# --- linking: each fracture cue goes to its nearest anatomy term --------------------------------
@pytest.mark.parametrize('text,rib,clav', [
    ('Clavicle fracture without rib fracture', 0, 1),
    ('Possible rib fracture and definite clavicle fracture', -1, 1),
    ('Acute left rib fracture and healed right clavicle fracture', 1, -1),
    ('Healed rib fracture and acute clavicle fracture', -1, 1),
    ('Rib fracture is healed and the clavicle fracture is acute', -1, 1)])
def test_cues_are_not_shared_across_classes(text, rib, clav):
    row, _ = mine_record({'r': text})
    assert (row['rib_fracture'], row['clavicle_fracture']) == (rib, clav)


@pytest.mark.parametrize('text,state', [
    ('Left clavicle and rib fractures', 'positive'), ('Healed left clavicle and left anterior rib fractures', 'history'),
    ('No fracture of the ribs or clavicles', 'negative'), ('No rib or clavicle fracture', 'negative')])
def test_coordinated_anatomy_shares_the_cue(text, state):
    assert sorted(states(text)) == [('clavicle_fracture', state), ('rib_fracture', state)]


def test_modifiers_stay_with_their_own_mention_in_coordination():
    got = {m.cls: (m.side, m.ribs) for m in find_mentions('Fractures of the right clavicle and left 6th and 7th ribs')}
    assert got == {'clavicle_fracture': ('right', ''), 'rib_fracture': ('left', '6,7')}


# --- other bones claim their own fractures ------------------------------------------------------
@pytest.mark.parametrize('text,cls,label', [
    ('Fracture of the left humerus, ribs intact', 'rib_fracture', 0),
    ('Sternal fracture, clavicles intact', 'clavicle_fracture', 0),
    ('Vertebral compression fracture, ribs are normal', 'rib_fracture', 0),
    ('Fracture of the scapula overlying the posterior 5th rib', 'rib_fracture', None),
    ('Fracture of the sternum near the costal cartilage', 'rib_fracture', None),
    ('T12 compression fracture projecting over the 12th rib', 'rib_fracture', None),
    ('Fracture of the acromion, the clavicle is normal', 'clavicle_fracture', 0),
    ('Fractures of the left humerus, scapula and ribs', 'rib_fracture', 1),      # a list: the ribs are in it
    ('Fracture of the acromial end of the left clavicle', 'clavicle_fracture', 1),  # part of the clavicle
    ('Fracture of the sternal end of the right clavicle', 'clavicle_fracture', 1),
    ('Fractured sternal wires near the left 2nd rib', 'rib_fracture', None)])     # 'sternal' names the wires here
def test_other_bones(text, cls, label):
    got = mine_record({'r': text})[0][cls]
    assert (None if pd.isna(got) else got) == label


# --- negation scope: lists ending with or/nor carry it, a comma or 'and' into a new finding ends it
@pytest.mark.parametrize('text', [
    'no pneumothorax, left clavicle fracture', 'Heart normal, lungs clear, no effusion, left 5th rib fracture',
    'No acute cardiopulmonary process, left rib fracture', 'no effusion and left clavicle fracture'])
def test_negation_does_not_run_into_a_new_finding(text):
    assert {st for _, st in states(text)} == {'positive'}


@pytest.mark.parametrize('text', [
    'No pneumothorax, effusion, or rib fracture', 'No rib or clavicle fracture', 'No evidence of pneumothorax or displaced rib fractures',
    'No pneumothorax, rib fracture, or pleural effusion', 'No acute, displaced rib fractures identified',
    'No displaced rib fractures, or obvious nondisplaced rib fractures', 'Neither pneumothorax nor rib fracture'])
def test_negation_lists_ending_with_or_stay_negated(text):
    assert {st for _, st in states(text)} == {'negative'}


# --- trailing windows start at the end of the mention; leading windows skip side/site/number words
@pytest.mark.parametrize('text,expected', [
    ('Fracture of the left posterior 5th rib is not identified', 'negative'),
    ('Fracture involving the lateral aspect of the right 5th rib is not seen', 'negative'),
    ('Fracture of the right 5th rib is not excluded', 'uncertain'),
    ('Healed right 10th and left 9th posterolateral rib fracture', 'history'),
    ('No left posterior 5th, 6th and 7th rib fractures', 'negative'),
    ('Rib fracture and pneumothorax are not seen', 'negative')])
def test_windows_measured_from_the_mention(text, expected):
    assert state(text) == expected


# --- cues added: unlikely, resolved, field values, question marks, hypotheticals after the mention
@pytest.mark.parametrize('text,expected', [
    ('Rib fracture unlikely', 'uncertain'), ('Clavicle fracture is doubtful', 'uncertain'),   # a hedge, not an exclusion
    ('Left rib fracture, resolved', 'negative'), ('Rib fracture: no', 'negative'), ('Rib fractures: none', 'negative'),
    ('Clavicle fracture: possible', 'uncertain'), ('Rib fracture: yes', 'positive'),
    ('Question rib fracture', 'uncertain'), ('? rib fracture', 'uncertain'), ('?left clavicle fracture', 'uncertain'),
    ('Rib fracture, if present, would be better seen on rib series', 'hypothetical'),
    ('Radiographs are insensitive for rib fracture', 'hypothetical'),
    ('Chest radiography has limited sensitivity for rib fractures', 'hypothetical')])
def test_added_cues(text, expected):
    assert state(text) == expected


def test_a_leading_question_mark_is_not_its_own_sentence():
    assert split_sentences('? rib fracture. Rib fracture? No effusion') == ['? rib fracture', 'Rib fracture?', 'No effusion']


def test_unlikely_follows_the_uncertain_policy():
    assert mine_record({'r': 'Rib fracture unlikely'})[0]['rib_fracture'] == -1
    assert mine_record({'r': 'Rib fracture unlikely'}, policy=Policy(uncertain='negative'))[0]['rib_fracture'] == 0


# --- history: deformity, nonacute, previously, treated fractures; indeterminate age --------------
@pytest.mark.parametrize('text', [
    'Post-traumatic deformity of the left clavicle', 'Nonacute rib fracture', 'Non-acute left rib fractures',
    'Left clavicle fracture deformity', 'Previously described rib fracture', 'Fracture fixation plate on the left clavicle',
    'ORIF of a left clavicle fracture', 'Deformity of the right 6th rib from a fracture'])
def test_more_history_cues(text):
    assert state(text) == 'history'


def test_acute_before_the_mention_outweighs_history_after_it():
    assert state('Acute fracture with deformity of the left 5th rib') == 'positive'


@pytest.mark.parametrize('text', ['Age-indeterminate rib fracture', 'age indeterminate rib fracture',
                                  'Fractures of the left 4th and 5th ribs, age-indeterminate',
                                  'Left 7th rib fracture of uncertain acuity', 'Rib fracture of indeterminate age'])
def test_indeterminate_age(text):
    assert state(text) == 'indeterminate_age'
    # acute or old: -1 by default, 1 when healed fractures count as positive, else the uncertain value
    assert mine_record({'r': text})[0]['rib_fracture'] == -1
    assert mine_record({'r': text}, policy=Policy(healed='positive'))[0]['rib_fracture'] == 1
    assert mine_record({'r': text}, policy=Policy(uncertain='negative', healed='negative'))[0]['rib_fracture'] == 0


# --- laterality and rib lists -------------------------------------------------------------------
@pytest.mark.parametrize('text,side,ribs', [
    ('fx of R 5th rib', 'right', '5'), ('Lt rib fx', 'left', ''), ('rt clavicular fx', 'right', ''),
    ('B/L rib fxs', 'bilateral', ''), ('Bilat rib fractures', 'bilateral', ''), ('L clavicle fracture', 'left', ''),
    ('Old fractures of the left 5th, 6th, 7th, 8th and 9th ribs', 'left', '5,6,7,8,9'),
    ('Fractures of the right 4th, 5th and 6th ribs', 'right', '4,5,6'),
    ('Fractures of the posterior left 4th, 5th, and 6th ribs', 'left', '4,5,6')])
def test_side_abbreviations_and_rib_lists(text, side, ribs):
    m = find_mentions(text)[0]
    assert (m.side, m.ribs) == (side, ribs)


def test_a_bare_letter_is_a_side_only_next_to_the_anatomy():
    assert find_mentions('PA and L views: rib fracture')[0].side == ''
    assert find_mentions('L1 compression fracture, no rib fracture')[0].side == ''


# --- a column name is not a section heading -----------------------------------------------------
@pytest.mark.parametrize('col', ['exam', 'History', 'indication'])
def test_column_names_are_mined(col):
    lab = mine_labels(pd.DataFrame({'id': [1], col: ['Acute left rib fracture']}), 'id', [col])
    assert lab.rib_fracture.tolist() == [1]
    # a heading inside the text still marks the question
    lab = mine_labels(pd.DataFrame({'id': [1], col: ['INDICATION: rib fracture? FINDINGS: normal']}), 'id', [col])
    assert lab.rib_fracture.isna().all()


# --- codes: missing values, numeric columns, '/', ICD-10 structure, arrays ----------------------
def test_missing_code_values_are_not_malformed():
    lab = mine_labels(pd.DataFrame({'id': [1, 2, 3], 'dx': [None, pd.NA, float('nan')]}), 'id', code_cols=['dx'])
    assert not lab.warnings.str.contains('malformed').any()
    assert parse_codes(pd.NA) == ([], []) and parse_codes([None, pd.NA]) == ([], [])


def test_numeric_code_columns():
    hits, warns = parse_codes([81002.0, 807.0, 807.03, 8070.0])
    assert [h[2] for h in hits] == ['81002', '807.0', '807.03', '8070'] and warns == []
    lab = mine_labels(pd.DataFrame({'id': [1], 'dx': [81002.0]}), 'id', code_cols=['dx'])
    assert lab.clavicle_fracture.tolist() == [1]


def test_slash_separated_codes():
    hits, warns = parse_codes('S22.31XA/S42.001A')
    assert [h[0] for h in hits] == ['rib_fracture', 'clavicle_fracture'] and warns == []


@pytest.mark.parametrize('code', ['S22.31XZ', 'S22.3XA', 'S22.31A', 'S42.00XA', 'S22.5XA'])
def test_malformed_fracture_codes_are_reported(code):
    hits, warns = parse_codes(code)
    assert hits == [] and len(warns) == 1 and 'malformed' in warns[0] and '7th character' in warns[0]


def test_array_valued_code_columns_are_lists():
    import numpy as np
    df = pd.DataFrame({'id': [1, 2], 'dx': [np.array(['S22.31XA', 'S42.001A']), np.array([], dtype=object)]})
    lab = mine_labels(df, 'id', code_cols=['dx'])
    assert lab.rib_fracture.fillna(9).tolist() == [1, 9] and lab.clavicle_fracture.fillna(9).tolist() == [1, 9]
    assert not lab.warnings.str.contains('malformed').any()


def test_parquet_with_list_column(tmp_path):
    pytest.importorskip('pyarrow', reason='pyarrow not installed (optional; Parquet input needs it)')
    p = tmp_path / 'r.parquet'
    pd.DataFrame({'id': ['a', 'b'], 'report': ['Left rib fracture', None], 'dx': [['S42.001A'], []]}).to_parquet(p)
    df, w = read_records(p)
    lab = mine_labels(df, 'id', ['report'], ['dx'])
    assert lab.rib_fracture.fillna(9).tolist() == [1, 9] and lab.clavicle_fracture.fillna(9).tolist() == [1, 9]


# --- reading CSV: header only, extra fields, other delimiters -----------------------------------
def test_header_only_csv_writes_an_empty_labels_file(tmp_path):
    p = tmp_path / 'r.csv'; p.write_text('id,report\n')
    out = tmp_path / 'o.csv'
    r = subprocess.run([CLI, 'mine-labels', str(p), '--id-col', 'id', '--text-col', 'report', '--out', str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '0 records' in r.stdout and 'no records' in r.stdout
    got = pd.read_csv(out)
    assert len(got) == 0 and list(got.columns[:4]) == ['id', 'rib_fracture', 'rib_fracture_source', 'rib_fracture_evidence']
    assert mine_labels(pd.DataFrame({'id': [], 't': []}), 'id', ['t']).columns.tolist()[-1] == 'warnings'


@pytest.mark.parametrize('body,line', [('1,Left rib fracture,extra\n2,ok\n', 2), ('1,ok\n2,Left rib fracture,extra,more\n', 3)])
def test_rows_with_too_many_fields_are_reported(tmp_path, body, line):
    p = tmp_path / 'r.csv'; p.write_text('id,report\n' + body)
    df, w = read_records(p)
    assert list(df.columns) == ['id', 'report'] and df.id.tolist() == ['1', '2']   # the id is not taken as the index
    assert 'Left rib fracture' in df.report.tolist()
    assert len(w) == 1 and 'more fields than the header' in w[0] and f'[{line}]' in w[0]


@pytest.mark.parametrize('sep', [';', '\t', '|'])
def test_delimiter_is_read_from_the_header(tmp_path, sep):
    p = tmp_path / 'r.csv'; p.write_text(sep.join(['id', 'report', 'dx']) + '\n' + sep.join(['1', 'Left rib fracture, old', 'S22.31XA']) + '\n')
    df, w = read_records(p)
    assert df.to_dict('records') == [{'id': '1', 'report': 'Left rib fracture, old', 'dx': 'S22.31XA'}] and w == []


# --- Open-i: history words, hand-checked states, and the default policy -------------------------
OPENI_HANDCHECKED = [   # sentences of Open-i reports with history words, read one by one
    ('Healed right 10th and left 9th posterolateral rib fracture', 'rib_fracture', 'history'),
    ('Old rib fractures, healed', 'rib_fracture', 'history'),
    ('Bilateral rib fractures, most of which appear old', 'rib_fracture', 'history'),
    ('Visualized osseous structures of the thorax demonstrate healed, remote bilateral rib fractures without acute abnormality',
     'rib_fracture', 'history'),
    ('Deformity of multiple left anterior ribs are present from previous fractures', 'rib_fracture', 'history'),
    ('Old right clavicular fracture is again noted', 'clavicle_fracture', 'history'),
    ('Healed left clavicle and left anterior rib fractures', 'clavicle_fracture', 'history'),
    ('Questionable old left posterior third and fourth rib fractures', 'rib_fracture', 'uncertain'),   # the hedge decides
    ('Fractures of the posterior left 4th, 5th, and 6th ribs, age-indeterminate', 'rib_fracture', 'indeterminate_age'),
    ('Minimally displaced fracture involving the lateral right 7th rib, XXXX acute', 'rib_fracture', 'positive')]


@pytest.mark.parametrize('text,cls,expected', OPENI_HANDCHECKED)
def test_openi_sentences_hand_checked(text, cls, expected):
    assert {m.state for m in find_mentions(text) if m.cls == cls} == {expected}


def test_openi_history_words_are_history(shared_data):
    "Every Open-i mention whose sentence has an old/healed/chronic/remote word is history, unless a hedge makes it uncertain."
    import re
    oi = load_openi(shared_data / 'openi_reports' / 'ecgen-radiology-even.tgz')
    hist = re.compile(r'\b(?:old|healed|healing|chronic|remote|callus)\b', re.I)
    n = 0
    for col in ('findings', 'impression'):
        for t in oi[col].dropna():
            for m in find_mentions(t, col):
                if hist.search(m.sentence):
                    n += 1
                    assert m.state == 'history' or (m.state == 'uncertain' and m.rule.startswith('uncertain(')), (m.sentence, m.rule)
    assert n >= 30


def test_openi_default_policy_scores_low_because_the_reference_codes_healed_fractures(shared_data):
    oi = load_openi(shared_data / 'openi_reports' / 'ecgen-radiology-even.tgz')
    ref = oi[[f'ref_{c}' for c in CLASSES]].rename(columns=lambda c: c[4:])
    s = evaluate_labels(mine_labels(oi, 'id', ['findings', 'impression']), ref)
    assert (s.precision == 1.0).all() and (s.recall < 0.5).all()   # the misses are healed fractures, -1 by default
